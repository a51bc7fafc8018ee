"""A Ray cluster for tests, on loopback only, and the Ray-backed server around it.

Ray listens on every interface whatever it is told (its raylet, GCS and agents bind
`::` or `0.0.0.0`; measured with Ray 2.60), so the tests that start one run in a
private network namespace (`unshare -rn`) where the loopback is the only interface:
`tests/api/test_ray.py` starts `tests/api/test_ray_api.py` there, and the inner tests
refuse to run anywhere else.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from api.live import LiveServer
from kd_server.api.server import serve_in_thread
from kd_server.config import Settings
from support import event_schemas

ROOT = Path(__file__).resolve().parents[2]
INSIDE_ENV = "KD_RAY_NETNS"


def inside_private_network() -> bool:
    """Whether this process runs where the loopback is the only network interface."""
    import psutil

    return os.environ.get(INSIDE_ENV) == "1" and set(psutil.net_if_addrs()) == {"lo"}


def can_make_private_network() -> str | None:
    """None when `unshare -rn` works here, else why not."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip is missing"
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True, check=False)
    if probe.returncode != 0:
        return f"unshare -rn fails: {probe.stderr.decode(errors='replace').strip()}"
    return None


def run_in_private_network(
    pytest_args: list[str], home: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    """pytest in a new network namespace whose only interface is the loopback (up)."""
    env = {
        **os.environ,
        INSIDE_ENV: "1",
        "HOME": str(home),  # Ray writes its session token under ~/.ray
        "RAY_USAGE_STATS_ENABLED": "0",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    script = 'ip link set lo up && exec "$0" -m pytest "$@"'
    command = ["unshare", "-rn", "sh", "-c", script, sys.executable, *pytest_args]
    return subprocess.run(
        command,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def start_local_ray(num_cpus: int = 4) -> None:
    """A cluster of this process alone (torn down by `ray.shutdown`)."""
    import ray

    ray.init(
        address="local",  # a new cluster, never one `ray start` left on this machine
        num_cpus=num_cpus,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        namespace="krita-diffusers-tests",
        log_to_driver=False,
    )


def stop_local_ray() -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def start_ray_server(settings: Settings, engine: Any, library: Any) -> tuple[LiveServer, Any]:
    """The real server in a thread, its jobs run by the Ray deployment (returned too:
    its lanes know the process id of the replica running each job)."""
    from kd_server.executors.ray_serve import RayExecutor

    executor = RayExecutor(settings, engine.check_model)
    running = serve_in_thread(settings, engine, library, start_timeout=120, executor=executor)
    headers = {"Authorization": f"Bearer {settings.token}"} if settings.token else {}
    live = LiveServer(running, headers)
    event_schemas.load(live.get("/openapi.json").json())
    return live, executor
