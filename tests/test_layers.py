"""The toolkit's layer contracts (pyproject.toml [tool.importlinter]) hold, and no module imports a name it
never uses.

import-linter discovers modules on the filesystem, but the toolkit's layers live in top-level folders mapped to
``edgeport.<layer>`` by setuptools' package-dir. So the test lays the package out as it is installed (from the
same package-dir table), in a temporary directory, and runs ``lint-imports`` on that copy.
"""
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _installed_layout(dest: Path) -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    for pkg in cfg["packages"]:
        src = ROOT / cfg["package-dir"][pkg]
        out = dest.joinpath(*pkg.split("."))
        out.mkdir(parents=True, exist_ok=True)
        for f in src.glob("*.py"):
            shutil.copy2(f, out / f.name)


def test_layer_contracts_hold(tmp_path):
    _installed_layout(tmp_path / "src")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "src"))
    r = subprocess.run([str(BIN / "lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
    # the contracts really were checked (a config that names no layer would also exit 0)
    assert "toolkit layers KEPT" in r.stdout and "Contracts: 2 kept, 0 broken" in r.stdout, r.stdout[-2000:]


def test_a_layer_violation_is_caught(tmp_path):
    """The check can fail: core importing a stage breaks the contract."""
    _installed_layout(tmp_path / "src")
    bad = tmp_path / "src" / "edgeport" / "core" / "paths.py"
    bad.write_text(bad.read_text() + "\nfrom edgeport.convert import recipes  # noqa\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "src"))
    r = subprocess.run([str(BIN / "lint-imports"), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                       cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "BROKEN" in r.stdout, r.stdout[-2000:]


def test_no_unused_imports():
    dirs = [str(ROOT / d) for d in ("edgeport", "core", "data", "train", "convert", "check", "devices",
                                    "runtime/edgeport_runtime", "tests", "benchmarks")]
    r = subprocess.run([sys.executable, "-m", "pyflakes", *dirs], capture_output=True, text=True)
    unused = [ln for ln in r.stdout.splitlines() if "imported but unused" in ln]
    assert not unused, "\n".join(unused)
