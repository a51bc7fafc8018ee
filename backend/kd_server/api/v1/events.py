"""`WS /v1/events?client_id=...`: the live event stream of one client's jobs.

Each connection gets its own bounded buffer (see `kd_server.events`). Two tasks run
per connection: one sends buffered events, one reads from the socket only to notice
that the client went away. Losing the connection never cancels a job. With
`resume=true` the connection first receives a `state` event for each of the client's
jobs, so a client that reconnects (after a lost connection or a server restart)
learns what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from typing import Any

from fastapi import APIRouter, WebSocket
from fastapi.responses import JSONResponse
from starlette.websockets import WebSocketDisconnect

from kd_server.api.auth import token_problem
from kd_server.api.errors import error_body
from kd_server.api.services import get_services
from kd_server.api.v1.schemas import CLIENT_ID_PATTERN
from kd_server.api.v1.wire import event_message, state_message
from kd_server.events import Subscription

log = logging.getLogger(__name__)

router = APIRouter(tags=["events"])

#: Close codes: 1001 server going away, 1013 "try again later" for a too-slow reader.
CLOSE_SHUTDOWN = 1001
CLOSE_TOO_SLOW = 1013


async def _refuse(websocket: WebSocket, status: int, code: str, message: str) -> None:
    """Refuse the handshake with an HTTP status and our JSON error body."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    response = JSONResponse(error_body(code, message), status_code=status, headers=headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # the ASGI server cannot send HTTP responses to WebSockets
        await websocket.close(code=1008, reason=message[:120])


@router.websocket("/events")
async def events(websocket: WebSocket, client_id: str | None = None, resume: bool = False) -> None:
    services = get_services(websocket)
    problem = token_problem(websocket.headers, services.settings.token)
    if problem is not None:
        await _refuse(websocket, 401, "unauthorized", problem)
        return
    if client_id is None or not re.fullmatch(CLIENT_ID_PATTERN, client_id):
        await _refuse(
            websocket,
            422,
            "invalid_request",
            "client_id: is required in the URL (?client_id=...), 1..128 letters, digits "
            "and ._:- (the same value as the jobs' client_id).",
        )
        return
    if services.closing:
        await _refuse(websocket, 503, "shutting_down", "The server is shutting down.")
        return
    await websocket.accept()
    with services.hub.subscribe(client_id) as subscription:
        if resume and not await _send_states(websocket, services.jobs_of, client_id):
            return
        sender = asyncio.create_task(_send_events(websocket, subscription))
        watcher = asyncio.create_task(_wait_for_disconnect(websocket))
        done, pending = await asyncio.wait({sender, watcher}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        if sender in done and subscription.close_reason is not None:
            shutting_down = services.closing
            code = CLOSE_SHUTDOWN if shutting_down else CLOSE_TOO_SLOW
            with contextlib.suppress(Exception):
                await websocket.close(code=code, reason=subscription.close_reason[:120])


async def _send_states(websocket: WebSocket, jobs_of: Any, client_id: str) -> bool:
    """`resume=true`: the state of each of the client's jobs, before any live event.
    Sent after subscribing, so nothing that happens meanwhile is missed (a client may
    see a result both in a state and in a later event; results are keyed by index).
    False when the client went away."""
    try:
        for view in await asyncio.to_thread(jobs_of, client_id):
            await websocket.send_text(json.dumps(state_message(view), separators=(",", ":")))
    except (WebSocketDisconnect, RuntimeError, OSError):
        return False
    return True


async def _send_events(websocket: WebSocket, subscription: Subscription) -> None:
    try:
        while (event := await subscription.get()) is not None:
            message = event_message(event)
            await websocket.send_text(json.dumps(message, separators=(",", ":")))
    except (WebSocketDisconnect, RuntimeError, OSError):
        return  # the client went away; its jobs carry on


async def _wait_for_disconnect(websocket: WebSocket) -> None:
    """Read (and ignore) client frames until the client disconnects."""
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
    except (WebSocketDisconnect, RuntimeError, OSError):
        return
