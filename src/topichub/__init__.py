"""topichub: real-time topic messaging over WebSockets with a durable per-topic log."""

__version__ = "0.1.0"
__all__ = ["__version__"]
