"""Shared helpers of the hardening suite: the uniform error check, the quick/full
switch, memory readings. The real server as a separate process is the suite-wide
`support.servers.ProcessServer`."""

from __future__ import annotations

import json
import os
import time

import psutil
import pytest
import requests

from support.servers import ROOT, ProcessServer

__all__ = ["ROOT", "ProcessServer"]  # the hardening tests import both from here too
#: The token of the suite's servers (long and unique, so a grep of a log is proof).
TOKEN = "hardening-s3cret-token-7b1f"
#: No request of the suite may take longer than this: it guards against a hang only.
HANG_GUARD_S = 30.0
TERMINAL = ("finished", "failed", "cancelled")
#: The 4xx statuses docs/protocol.md documents; anything else is a contract break.
DOCUMENTED_4XX = {401, 404, 405, 409, 413, 422, 429}


def full_mode(config: pytest.Config) -> bool:
    """Full mode: `--hardening-full` or KD_HARDENING_FULL=1 (thousands of cases)."""
    flag = bool(config.getoption("--hardening-full", default=False))
    return flag or os.environ.get("KD_HARDENING_FULL", "") not in ("", "0")


def error_problem(response: requests.Response) -> str | None:
    """Why `response` (a 4xx/5xx) breaks the error contract, or None when it keeps it."""
    return error_text_problem(response.text)


def error_text_problem(text: str) -> str | None:
    """Why an error response body breaks the error contract, or None when it keeps it.

    The contract (docs/protocol.md): JSON `{"error": {"code", "message"}}`, nothing
    else, a code in snake_case and a message a person can act on: a sentence, with no
    traceback or Python internals in it.
    """
    try:
        body = json.loads(text)
    except ValueError:
        return f"not JSON: {text[:200]!r}"
    if not isinstance(body, dict) or set(body) != {"error"}:
        return f"not {{'error': ...}}: {body!r}"
    error = body["error"]
    if not isinstance(error, dict) or set(error) != {"code", "message"}:
        return f"error is not {{code, message}}: {error!r}"
    code, message = error["code"], error["message"]
    if not isinstance(code, str) or not code or not code.replace("_", "").isalnum():
        return f"bad code {code!r}"
    if not isinstance(message, str) or len(message) < 12 or " " not in message:
        return f"message is not a sentence: {message!r}"
    for leak in ("Traceback", 'File "', "site-packages", "pydantic", "Error(", "0x7f"):
        if leak in message:
            return f"message leaks internals ({leak}): {message!r}"
    return None


def assert_error(response: requests.Response, status: int, code: str | None = None) -> str:
    """Assert an error response of `status` (and `code`); returns its message."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    problem = error_problem(response)
    assert problem is None, problem
    error = response.json()["error"]
    if code is not None:
        assert error["code"] == code, error
    return str(error["message"])


def rss_of(pid: int) -> int:
    """Resident memory of one process, bytes."""
    return int(psutil.Process(pid).memory_info().rss)


def wait_job(base: str, headers: dict[str, str], job_id: str, timeout: float = 180) -> dict:
    """Poll until the job ends; the timeout guards against a hang only."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = requests.get(f"{base}/v1/jobs/{job_id}", headers=headers, timeout=HANG_GUARD_S)
        state = reply.json()
        assert reply.status_code != 404, f"job {job_id} is unknown to the server: {state}"
        if reply.status_code == 200 and state["status"] in TERMINAL:
            return dict(state)
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not end")
