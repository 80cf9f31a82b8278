"""The seeded fuzz run of `make test`: 650 mutated models, manifests and archives must all fail cleanly.

Each case runs in a worker subprocess (a crash in C is detected and counted), with a fresh working directory and
TMPDIR in a watched directory. `make fuzz` runs the same fuzzer with 5,000 cases and prints its numbers.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import fuzzing  # noqa: E402


def test_fuzz_cases_fail_cleanly_and_write_nothing_outside():
    r = fuzzing.run(650, seed=1, workers=2)
    assert r["cases"] == 650
    assert r["failures"] == [], r["failures"][:5]
    # the mutations must reach the error paths of every kind, or this test proves nothing
    for kind in ("tflite", "onnx", "manifest", "archive"):
        errors = sum(v for k, v in r["by_kind"][kind].items() if k != "ok")
        assert errors >= 10, (kind, r["by_kind"][kind])
    assert r["by_kind"]["manifest"].get("IntegrityError", 0) > 0  # path escapes were refused as such
