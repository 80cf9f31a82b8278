#!/bin/sh
# Offline install of an edgeport device bundle: a venv with edgeport-runtime and its backend, from ./wheels only.
# Usage: sh install.sh [VENV_DIR]   (default: ./venv next to this script). PYTHON=python3.11 to choose Python.
# Checks first that this machine is the one the archive was made for (CPU architecture, Python version, OS
# packages), then builds the venv under a temporary name and renames it at the end: on any failure nothing is left.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
venv=${1:-"$here/venv"}
case $venv in /*) ;; *) venv="$(pwd)/$venv" ;; esac  # scripts in the venv need its absolute path
py=${PYTHON:-python3}
# PROFILE ARCH PYTHON_VERSION OS_RELEASE OS_CODENAME EXTRAS SYSTEM_NUMPY OS_PACKAGES OS_MODULES
# (written by `edgeport bundle`)
. "$here/device.env"
fail() { echo "install.sh: $*" >&2; exit 2; }

command -v "$py" >/dev/null 2>&1 || fail "no $py on this machine; install Python $PYTHON_VERSION or set PYTHON=..."
# The userland's architecture, as the chosen Python sees it: a 32-bit Pi OS on a 64-bit kernel reports
# `uname -m` = aarch64, but its Python (4-byte pointers) needs armv7l wheels.
machine=$("$py" -c 'import platform, struct
m = platform.machine()
print("armv7l" if struct.calcsize("P") == 4 and m in ("aarch64", "armv8l", "armv7l") else m)')
[ "$machine" = "$ARCH" ] || fail "this archive is for $PROFILE ($ARCH) but this machine runs $machine \
(uname -m: $(uname -m)). Make the archive for this device: edgeport bundle BUNDLE --device PROFILE \
(see edgeport devices)."
pyver=$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$pyver" = "$PYTHON_VERSION" ] || fail "this archive's wheels are for Python $PYTHON_VERSION but $py is \
Python $pyver. Run with PYTHON=python$PYTHON_VERSION, or make the archive for a profile with python = \"$pyver\"."
# Another OS release than the profile's: only a warning. The Python check above already refuses what cannot
# work (bookworm has 3.11, trixie 3.13); what is left (e.g. Ubuntu with the same Python) may well run.
if [ -n "$OS_CODENAME" ] && [ -r /etc/os-release ]; then
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [ -z "$codename" ] || [ "$codename" = "$OS_CODENAME" ] || echo "install.sh: warning: this archive was made for \
$PROFILE ($OS_RELEASE) but this machine runs $codename; if something fails, make the archive for a profile of \
this OS (see edgeport devices)." >&2
fi
for m in $OS_MODULES; do
    "$py" -c "import $m" 2>/dev/null || fail "$PROFILE takes $OS_PACKAGES from the OS (no wheels for $ARCH on \
PyPI) but $py cannot import $m. Install them: sudo apt install $OS_PACKAGES"
done
[ ! -e "$venv" ] || fail "$venv already exists; remove it or pass another directory: sh install.sh DIR"

# Built beside its final place (same filesystem: the rename is atomic), removed on any failure or signal.
tmp="$venv.partial.$$"
cleanup() { rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
# A profile whose numpy (and Pillow) come from the OS (armv7: no wheels on PyPI) gets a venv that sees the OS's
# site-packages: pip then counts the apt-installed numpy as meeting edgeport-runtime's and the backend's numpy
# requirement and installs only the wheels in ./wheels (which hold no numpy for such a profile).
if [ "$SYSTEM_NUMPY" = "1" ] || [ -n "$OS_PACKAGES" ]; then
    "$py" -m venv --system-site-packages "$tmp"   # the OS's packages (numpy, Pillow) stay visible
else
    "$py" -m venv "$tmp"
fi
"$tmp/bin/pip" install --quiet --disable-pip-version-check --no-index --find-links "$here/wheels" \
    "edgeport-runtime[$EXTRAS]" </dev/null
# venv scripts carry their own absolute path (shebangs, activate): point them at the final place, then rename.
sed_escape() { printf '%s' "$1" | sed 's/[][\\.*^$|&]/\\&/g'; }
from=$(sed_escape "$tmp") to=$(sed_escape "$venv")
for f in "$tmp"/bin/*; do
    if [ -f "$f" ] && [ ! -L "$f" ] && grep -Iq . "$f" 2>/dev/null; then
        sed -i "s|$from|$to|g" "$f"
    fi
done
"$tmp/bin/python" -c "import edgeport_runtime" </dev/null
mv "$tmp" "$venv"
trap - EXIT
echo "installed edgeport-runtime[$EXTRAS] into $venv"
