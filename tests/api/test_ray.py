"""The Ray executor's tests (`test_ray_api.py`), run in a private network namespace
so that the Ray cluster they start is reachable on the loopback only (Ray itself
binds every interface). Skipped where Ray or `unshare -rn` is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.ray_cluster import can_make_private_network, run_in_private_network

INNER = "tests/api/test_ray_api.py"


def test_ray_executor_suite_on_loopback_only(tmp_path: Path) -> None:
    pytest.importorskip("ray.serve", reason="Ray is an optional extra: pip install .[ray]")
    why_not = can_make_private_network()
    if why_not is not None:
        pytest.skip(f"no private network namespace: {why_not}")
    result = run_in_private_network(
        [INNER, "-p", "no:cacheprovider", "-x"], home=tmp_path, timeout=900
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = output.strip().splitlines()[-1]
    assert " passed" in summary and "skipped" not in summary, output[-3000:]
