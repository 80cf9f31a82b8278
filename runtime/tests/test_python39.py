"""edgeport-runtime imports and works on Python 3.9 (older Raspberry Pi OS images ship it)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

def _python39():
    """A working Python 3.9: on PATH, or installed by pyenv (whose shim may not expose it)."""
    import glob

    for cand in [shutil.which("python3.9"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))]:
        if cand and subprocess.run([cand, "-c", "pass"], capture_output=True).returncode == 0:
            return cand
    return None


PY39 = _python39()
RUNTIME = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(PY39 is None, reason="no python3.9 on this machine")
def test_runtime_imports_and_reads_bundles_on_python39(tmp_path, bundle):
    venv = tmp_path / "py39"
    subprocess.run([PY39, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # numpy 1.26 is the newest numpy for Python 3.9; no interpreter backend: this checks the pure-Python parts
    subprocess.run(pip + ["numpy==1.26.4"], check=True)
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import numpy as np, edgeport_runtime as er\n"
        "m = er.read_manifest(%r)\n"
        "assert er.quantize(np.array([2.5], np.float32), 1.0, 0)[0] == 2\n"
        "try:\n"
        "    er.load(%r)\n"
        "except er.BackendUnavailableError as e:\n"
        "    print('OK', e)\n"
    ) % (str(RUNTIME), str(bundle), str(bundle))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("OK") and "pip install edgeport-runtime[litert]" in out.stdout
