"""The edge: the redirect hot path and the /api/v1 link API in one ASGI app."""
