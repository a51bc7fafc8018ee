#!/bin/sh
# The project's test command (README, second command; `.ci/run` calls exactly this).
# From a fresh clone: makes `.venv`, installs the server with its test tools (torch is
# pinned in setup.py, so this machine's local CPU wheel is used), installs what the
# real-Krita end-to-end tests need, checks lint, format and types (ruff, mypy: both
# must be clean), then runs the whole suite. Extra arguments go to pytest, e.g.
# `sh tests/run.sh tests/engine -x`.
set -eu
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# Quiet unless something goes wrong; a re-run with everything present takes seconds.
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 \
    | grep -v "^WARNING: Location" || true
# spandrel (upscaler models) without its declared torchvision, which would replace the
# CPU torch; kd_server.upscale.spandrel_import explains (docs/upscale.md).
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps spandrel==0.4.2 2>&1 \
    | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import kd_server, torch, diffusers, PyQt5" \
    || { echo "tests/run.sh: the test environment is incomplete; see the pip output above" >&2; exit 1; }

sh tests/e2e/install_deps.sh

# Lint, format and types first: seconds, and a failure names the file and line.
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
.venv/bin/mypy

export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 QT_QPA_PLATFORM=offscreen
exec .venv/bin/python -m pytest "$@"
