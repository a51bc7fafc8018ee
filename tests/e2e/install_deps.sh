#!/bin/sh
# Installs what the Krita end-to-end tests need (Debian's krita, Xvfb, xauth), and only
# when something is missing, so that `.ci/run` can call it on every run at no cost.
# Recommended packages are kept on purpose: they bring python3-pyqt5, which Krita's
# Python scripting (and so both plugins) needs.
set -eu

missing=""
command -v krita >/dev/null 2>&1 || missing="$missing krita"
command -v xvfb-run >/dev/null 2>&1 || missing="$missing xvfb"
command -v xauth >/dev/null 2>&1 || missing="$missing xauth"
if command -v krita >/dev/null 2>&1 && ! /usr/bin/python3 -c "import PyQt5.QtWidgets" 2>/dev/null; then
    missing="$missing python3-pyqt5"
fi

if [ -z "$missing" ]; then
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
else
    SUDO=""
fi

echo "install_deps: installing$missing" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
