"""The README backs its guarantees with named tests: every `tests/...py::test_name` it cites must exist."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# `path/to/test_x.py::test_name` or, continuing the last named file, `::test_name`
CITATION = re.compile(r"`((?:runtime/)?tests/[\w/]+\.py)?::(test_\w+)")


def _citations():
    text = (ROOT / "README.md").read_text()
    current = None
    for m in CITATION.finditer(text):
        current = m.group(1) or current
        yield current, m.group(2)


def test_readme_cites_tests_that_exist():
    cited = list(_citations())
    assert len(cited) > 40  # the Safety section alone names dozens; a broken pattern must not pass vacuously
    missing = []
    for path, name in cited:
        f = ROOT / path if path else None
        if f is None or not f.is_file() or not re.search(rf"^\s*def {name}\(", f.read_text(), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, f"README cites tests that do not exist: {missing}"
