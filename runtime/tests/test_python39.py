"""edgeport-runtime keeps to Python 3.9 (older Raspberry Pi OS images ship it).

vermin (pinned in requirements/runtime-test.txt) parses every module of the package and reports any syntax,
module, function or keyword newer than 3.9; it needs no Python 3.9 on this machine, so this check always runs.
When a python3.9 interpreter exists, the package is also imported and exercised on it.
"""
import glob
import os
import shutil
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgeport_runtime"
RUNTIME = PACKAGE.parent


def _vermin(*paths):
    return subprocess.run([sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "--target=3.9-", "--no-tips", "--violations",
                           "--eval-annotations", "--backport", "typing_extensions", *map(str, paths)],
                          capture_output=True, text=True)


def _python39():
    """A working Python 3.9: on PATH, or installed by pyenv (whose shim may not expose it)."""
    for cand in [shutil.which("python3.9"), *sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/3.9*/bin/python3.9")))]:
        if cand and subprocess.run([cand, "-c", "pass"], capture_output=True).returncode == 0:
            return cand
    return None


def test_vermin_flags_code_newer_than_python39(tmp_path):
    """The checker itself must fail on 3.10+ code, or the test below proves nothing."""
    (tmp_path / "new.py").write_text("def f(x: int | None):\n    match x:\n        case 1:\n            return 1\n")
    out = _vermin(tmp_path / "new.py")
    assert out.returncode != 0 and "3.10" in out.stdout, out.stdout + out.stderr


def test_runtime_package_needs_nothing_newer_than_python39(tmp_path, bundle):
    out = _vermin(PACKAGE)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Minimum required versions" in out.stdout  # it really analysed the package
    py39 = _python39()
    if py39 is None:  # the static check above is the guarantee; a real 3.9 run is a bonus where one exists
        return
    code = (
        "import sys; sys.path.insert(0, %r)\n"
        "import edgeport_runtime as er\n"
        "m = er.read_manifest(%r)\n"
        "print('OK', m.default_artifact)\n"
    ) % (str(RUNTIME), str(bundle))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    venv = tmp_path / "py39"
    subprocess.run([py39, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                    "numpy==1.26.4"], check=True)  # numpy 1.26 is the newest numpy for Python 3.9
    run = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0 and run.stdout.startswith("OK tflite-int8"), run.stderr
