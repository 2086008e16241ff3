# One topichub node. Not built on the development machines (no Docker engine there): kept
# minimal; see docs/deployment.md.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir '.[postgres,redis]' && useradd --create-home topichub
USER topichub
ENV TOPICHUB_HOST=0.0.0.0 TOPICHUB_DATA_DIR=/home/topichub/data
EXPOSE 5000 5001
STOPSIGNAL SIGTERM
HEALTHCHECK CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5001/readyz')"
CMD ["topichub", "serve"]
