"""The runtime's "no TensorFlow in sys.modules" check, run where TensorFlow IS installed (the toolkit .venv).

In .venv-runtime TensorFlow cannot be imported at all, so the same check there cannot fail; here an accidental
`import tensorflow` anywhere in edgeport_runtime would load it and fail this test.
"""
import importlib.util
import shutil
import sys
from pathlib import Path

RUNTIME_TESTS = Path(__file__).resolve().parents[1] / "runtime" / "tests"


def _isolation_module():
    spec = importlib.util.spec_from_file_location("runtime_isolation", RUNTIME_TESTS / "test_isolation.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_runtime_loads_no_tensorflow_even_where_it_is_installed(tmp_path):
    iso = _isolation_module()
    assert importlib.util.find_spec("tensorflow") is not None  # else this check would prove nothing
    bundle = tmp_path / "bundle"
    shutil.copytree(RUNTIME_TESTS / "fixtures" / "bundle", bundle)
    loaded = iso.modules_after_runtime_use(sys.executable, bundle)
    assert "edgeport_runtime" in loaded and "numpy" in loaded
    assert not loaded & set(iso.FORBIDDEN), loaded & set(iso.FORBIDDEN)
