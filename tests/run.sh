#!/bin/sh
# The project's test command (README, second command; `.ci/run` calls exactly this).
# From a fresh clone: makes `.venv`, installs the server with its test tools (torch is
# pinned in setup.py, so this machine's local CPU wheel is used), installs what the
# real-Krita end-to-end tests need, checks lint, format and types (ruff, mypy: both
# must be clean), then runs the whole suite, then the plugin's tests (tests/plugin) a
# second time under PyQt6, Krita 6's binding, in `.venv-qt6` (docs/plugin.md, "Krita
# versions"). Extra arguments go to pytest and run under PyQt5 only, e.g.
# `sh tests/run.sh tests/engine -x`; `KD_QT=6 sh tests/run.sh [ARGS]` runs only the
# PyQt6 run (ARGS default to tests/plugin).
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

# The PyQt6 environment: PyQt6 6.11 (6.12 has no Qt wheel on this machine's registry),
# pytest and pytest-qt of its own. The test fixtures that write tiny model files
# (modelkit) need torch, so the main venv's packages are read after its own (a .pth
# line); PyQt5 is then on the path too, so KD_QT=6 makes the plugin take PyQt6 and
# tests/plugin/test_qt_compat.py proves PyQt5 is never loaded. The servers the tests
# start run on the main venv's Python (KD_SERVER_PYTHON, tests/support/servers.py).
qt6_env() {
    if [ ! -x .venv-qt6/bin/python ]; then
        "$PYTHON" -m venv .venv-qt6
        echo '*' > .venv-qt6/.gitignore  # the folder ignores itself
    fi
    .venv-qt6/bin/python -m pip install -q --disable-pip-version-check \
        'PyQt6==6.11.*' 'pytest>=8' 'pytest-qt>=4' 2>&1 | grep -v "^WARNING: Location" || true
    main_site=$(.venv/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    qt6_site=$(.venv-qt6/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    echo "import site; site.addsitedir('$main_site')" > "$qt6_site/kd-main-venv.pth"
    .venv-qt6/bin/python -c "import PyQt6.QtWidgets, pytestqt, torch" \
        || { echo "tests/run.sh: .venv-qt6 is incomplete; see the pip output above" >&2; exit 1; }
}

qt6_pytest() {
    KD_QT=6 PYTEST_QT_API=pyqt6 KD_SERVER_PYTHON="$PWD/.venv/bin/python" \
        .venv-qt6/bin/python -m pytest "$@"
}

if [ "${KD_QT:-}" = 6 ]; then
    qt6_env
    [ $# -gt 0 ] || set -- tests/plugin
    qt6_pytest "$@"
    exit
fi
if [ $# -gt 0 ]; then
    exec .venv/bin/python -m pytest "$@"
fi
status=0
.venv/bin/python -m pytest || status=$?
echo "tests/run.sh: tests/plugin again under PyQt6 (Krita 6's binding)"
qt6_env
qt6_pytest tests/plugin || status=$?
exit "$status"
