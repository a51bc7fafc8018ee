"""AUTOMATIC1111-compatible API (`/sdapi/v1/...`) next to our own v1 protocol.

`router` is included by `kd_server.api.app.create_app`; see docs/a1111.md.
"""

from kd_server.api.a1111.routes import router

__all__ = ["router"]
