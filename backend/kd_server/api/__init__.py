"""The HTTP API (wire protocol v1): FastAPI app, routes, schemas, auth, errors."""
