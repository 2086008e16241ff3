"""The one place every setting meets.

Each field of :class:`Settings` is settable three ways, highest priority first: a command
line flag (generated from the field by :func:`add_flags`), a ``TOPICHUB_*`` environment
variable of the same name, and the default below. PROTOCOL.md, "Processes and ports".
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# Flags whose names differ from the field name (PROTOCOL.md names them this way).
FLAG_NAMES = {"database_url": "--database", "broker_url": "--broker"}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TOPICHUB_", extra="ignore")

    host: str = Field("127.0.0.1", description="bind address of both services")
    ws_port: int = Field(5000, ge=0, le=65535, description="WebSocket gateway port")
    api_port: int = Field(5001, ge=0, le=65535, description="REST API, console and docs port")
    data_dir: Path = Field(Path(".topichub"), description="where the SQLite file and secret live")
    database_url: str = Field(
        "", description="sqlite:///path or postgresql://...; default: SQLite in the data dir"
    )
    broker_url: str = Field("memory://", description="memory:// or redis://...")
    secret: str = Field("", description="token signing secret; default: generated 0600 file")
    token_ttl: int = Field(86400, ge=1, description="token lifetime in seconds")
    max_frame_bytes: int = Field(65536, ge=256, description="largest accepted frame")
    max_message_bytes: int = Field(
        32768, ge=16, description="largest message content (JSON-encoded)"
    )
    rate_limit: float = Field(
        1000.0, ge=0, description="messages per second per user (0: no limit)"
    )
    rate_burst: int = Field(2000, ge=1, description="messages a user may send at once")
    outbound_buffer_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="per-connection send buffer; over it: close 1013"
    )
    cursor_flush_ms: int = Field(200, ge=1, description="how often delivery cursors are saved")
    keepalive_seconds: float = Field(
        20.0, gt=0, description="ping quiet connections; cut one silent for a whole interval"
    )
    retention_messages: int = Field(
        0, ge=0, description="keep at most this many newest messages per topic (0: all)"
    )
    retention_seconds: int = Field(
        0, ge=0, description="drop messages older than this many seconds (0: never)"
    )
    log_level: str = Field("info", description="debug, info, warning or error")

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'topichub.db').as_posix()}"


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add one ``--flag`` per settings field; unset flags leave env and defaults in force."""
    for name, field in Settings.model_fields.items():
        if name == "secret":
            continue  # a secret never goes on a command line (it would show in `ps`)
        flag = FLAG_NAMES.get(name, "--" + name.replace("_", "-"))
        env = "TOPICHUB_" + name.upper()
        parser.add_argument(
            flag,
            dest=name,
            default=None,
            metavar=name.upper(),
            help=f"{field.description} (env {env}, default {field.default!s:.40})",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        name: value
        for name in Settings.model_fields
        if (value := getattr(args, name, None)) is not None
    }
    return Settings(**overrides)
