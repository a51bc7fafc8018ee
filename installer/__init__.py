"""One-command installer for Krita Diffusers (server venv, Krita plugin, settings, models).

Runs on the system Python with the standard library only: it has to work before any
virtual environment exists. Entry point: `python3 -m installer` (see `cli.py`).
"""
