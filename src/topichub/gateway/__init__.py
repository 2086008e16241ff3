"""The WebSocket edge: handshake, one connection's frames, routing to local sockets."""
