#!/usr/bin/env bash
# Installs the real Label Studio (from PyPI, pinned) into its own virtual environment for the slow
# test that round-trips tasks and annotations through it (tests/helpers/label_studio.py starts it on
# 127.0.0.1 with SQLite). Its own environment: its Django stack must not meet fieldlens's packages.
set -euo pipefail
VENV=".venv-label-studio"
VERSION="1.23.2"
if [ -x "$VENV/bin/label-studio" ] && [ -e "$VENV/.installed-$VERSION" ]; then exit 0; fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install --quiet "label-studio==$VERSION"
touch "$VENV/.installed-$VERSION"
