"""The REST edge (PROTOCOL.md, "REST API"): HTTP in, service calls, JSON out."""
