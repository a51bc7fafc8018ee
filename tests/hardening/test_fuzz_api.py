"""Property-based testing of the whole HTTP API from its own OpenAPI schema.

Schemathesis turns `/openapi.json` (fetched with the token, as a client must) into
Hypothesis strategies: schema-valid requests (positive) and requests that break the
schema (negative: wrong types, out-of-range numbers, missing fields, bodies that are
not JSON). Every response must keep the contract: no 5xx, an answer before the hang
guard, and every 4xx the uniform `{"error": {"code", "message"}}` body with a
message a person can act on.

Quick mode (default) tries a few hundred cases with a fixed seed, so CI sees the same
cases each run; `--hardening-full` tries thousands, freshly random.
"""

from __future__ import annotations

import json
import string
from collections import Counter
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from api.live import LiveServer
from hardening.figures import record
from hardening.support import DOCUMENTED_4XX, HANG_GUARD_S, error_text_problem

#: Every operation of wire protocol v1. A route added without being listed here makes
#: `test_every_v1_operation_is_fuzzed` fail, so nothing escapes the fuzzer unnoticed.
V1_OPERATIONS = [
    ("GET", "/v1/health"),
    ("GET", "/v1/models"),
    ("GET", "/v1/samplers"),
    ("POST", "/v1/jobs"),
    ("GET", "/v1/jobs/{job_id}"),
    ("DELETE", "/v1/jobs/{job_id}"),
    ("GET", "/v1/jobs/{job_id}/images/{index}"),
    ("POST", "/v1/preprocess"),
]
#: The A1111-compatible routes (and its ControlNet extension's) are fuzzed by their
#: own test (no 5xx, no hang).
A1111_PREFIX = ("/sdapi/", "/controlnet/")

QUICK_CASES, FULL_CASES = 40, 400
_seen: Counter[str] = Counter()


def _budget(full: bool) -> dict[str, Any]:
    return {
        "max_examples": FULL_CASES if full else QUICK_CASES,
        "derandomize": not full,
        "deadline": None,
        "database": None,
        "suppress_health_check": list(HealthCheck),
    }


@pytest.fixture(scope="module")
def schema(token_server: LiveServer) -> Any:
    reply = token_server.get("/openapi.json")
    assert reply.status_code == 200, reply.text
    return schemathesis.openapi.from_dict(reply.json())


def _operation(schema: Any, method: str, path: str) -> Any:
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() == method and operation.path == path:
            return operation
    raise AssertionError(f"{method} {path} is not in /openapi.json")


def check_response(live: LiveServer, label: str, status: int, text: str) -> None:
    """The contract every answer keeps, whatever the request was."""
    _seen[label] += 1
    _seen[f"status {status}"] += 1
    assert status < 500, (label, status, text[:500])
    if status >= 400:
        assert status in DOCUMENTED_4XX, (label, status, text[:500])
        problem = error_text_problem(text)
        assert problem is None, (label, status, problem)
    if status == 202 and label.startswith("POST /v1/jobs"):
        _cancel(live, json.loads(text)["job_id"])


def _is_png(headers: dict[str, list[str]]) -> bool:
    return any(value.startswith("image/png") for value in headers.get("content-type", []))


def _cancel(live: LiveServer, job_id: str) -> None:
    """Accepted jobs are cancelled at once: the fuzzer tests the API, not the GPU."""
    reply = live.delete(f"/v1/jobs/{job_id}")
    assert reply.status_code in (200, 202, 409), reply.text


def _fuzz(live: LiveServer, operation: Any, mode: GenerationMode, full: bool) -> None:
    label = f"{operation.method.upper()} {operation.path} {mode.value}"

    @settings(**_budget(full))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=live.url, headers=live.headers, timeout=HANG_GUARD_S)
        text = "" if _is_png(response.headers) else response.text
        check_response(live, label, response.status_code, text)

    try:
        run()
    except Unsatisfiable:
        # e.g. GET /v1/health has no input to break: there is no negative case
        assert mode is GenerationMode.NEGATIVE, label


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize(("method", "path"), V1_OPERATIONS)
def test_v1_operation_keeps_the_contract(schema, token_server, full, method, path, mode):
    _fuzz(token_server, _operation(schema, method, path), mode, full)


def test_every_v1_operation_is_fuzzed(schema):
    listed = {
        (r.ok().method.upper(), r.ok().path)
        for r in schema.get_all_operations()
        if r.ok().path.startswith("/v1/")
    }
    assert listed == set(V1_OPERATIONS)


def test_a1111_operations_keep_their_contract(schema, token_server, full):
    """The A1111 layer answers 5xx-free too (its error body is A1111's, not ours)."""
    failures = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith(A1111_PREFIX):
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                failures += _fuzz_a1111(token_server, operation, mode, full)
    assert not failures, failures


def _fuzz_a1111(live: LiveServer, operation: Any, mode: GenerationMode, full: bool) -> list[str]:
    @settings(**_budget(full))
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        response = case.call(base_url=live.url, headers=live.headers, timeout=HANG_GUARD_S)
        _seen["a1111"] += 1
        assert response.status_code < 500, (operation.path, response.text[:300])

    try:
        run()
    except Unsatisfiable:
        pass
    except AssertionError as exc:
        return [f"{operation.method.upper()} {operation.path} {mode.value}: {str(exc)[:400]}"]
    return []


# ------------------------------------------------ semantically valid jobs, randomised

SAMPLERS = ["Euler", "Euler a", "DPM++ 2M Karras", "DDIM", "UniPC", "LCM"]
CLIENT_IDS = st.text(string.ascii_letters + string.digits + "._:-", min_size=1, max_size=128)


@st.composite
def txt2img_bodies(draw: st.DrawFn) -> dict[str, Any]:
    """Jobs that pass every rule, with odd but legal values: any Unicode prompt, edge
    numbers, odd client ids. They must be accepted (202) or refused for a full queue."""
    sampler = draw(st.sampled_from(SAMPLERS))
    # LCM's schedule has 50 timesteps (a documented 422 beyond them: docs/protocol.md)
    most_steps = 50 if sampler == "LCM" else 150
    return {
        "task": "txt2img",
        "prompt": draw(st.text(max_size=300)),
        "negative_prompt": draw(st.text(max_size=50)),
        "sampler": sampler,
        "steps": draw(st.integers(1, most_steps)),
        "cfg_scale": draw(st.floats(0, 30, allow_nan=False)),
        "seed": draw(st.one_of(st.none(), st.integers(-1, 2**32 - 1))),
        "batch_size": draw(st.integers(1, 2)),
        "width": draw(st.sampled_from([64, 72, 128])),
        "height": draw(st.sampled_from([64, 120, 128])),
        "preview_every": draw(st.integers(0, 150)),
        "client_id": draw(st.one_of(st.none(), CLIENT_IDS)),
    }


def test_legal_jobs_with_odd_values_are_accepted(token_server, full):
    @settings(**_budget(full))
    @given(body=txt2img_bodies())
    def run(body: dict[str, Any]) -> None:
        response = token_server.post("/v1/jobs", json=body)
        assert response.status_code in (202, 429), (body, response.text[:500])
        check_response(token_server, "POST /v1/jobs legal", response.status_code, response.text)

    run()


def test_zz_record_figures():
    """Runs last in this module: how many cases were tried, by operation and status."""
    total = sum(count for label, count in _seen.items() if not label.startswith("status "))
    record("fuzz_cases", total)
    record("fuzz_by_label", dict(sorted(_seen.items())))
