#!/bin/sh
# Offline install of an edgeport device bundle: a venv with edgeport-runtime and its backend, from ./wheels only.
# Usage: sh install.sh [VENV_DIR]   (default: ./venv next to this script). PYTHON=python3.11 to choose Python.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-"$here/venv"}
py=${PYTHON:-python3}
. "$here/device.env"   # EXTRAS, SYSTEM_NUMPY (written by `edgeport bundle` from the profile)
if [ "$SYSTEM_NUMPY" = "1" ]; then
    # no numpy wheels on PyPI for this platform: use the OS's python3-numpy
    "$py" -m venv --system-site-packages "$venv"
else
    "$py" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$here/wheels" \
    "edgeport-runtime[$EXTRAS]"
echo "installed edgeport-runtime[$EXTRAS] into $venv"
