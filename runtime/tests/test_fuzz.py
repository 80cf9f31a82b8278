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


def test_fuzz_harness_reports_crash_leak_undocumented_multiline_and_hang(monkeypatch):
    """The harness itself must be able to fail: planted bad cases are each counted as a failure."""
    monkeypatch.setenv("EDGEPORT_FUZZ_SELFTEST", "1")
    monkeypatch.setenv("EDGEPORT_FUZZ_TIMEOUT", "5")  # the planted hang sleeps 2x this
    monkeypatch.setattr(fuzzing, "CASE_TIMEOUT_S", 5.0)
    r = fuzzing.run(6, seed=1, workers=2)
    got = {f["i"]: f["outcome"] for f in r["failures"]}
    assert got[0].startswith("FAIL:crash(rc=-6)")  # SIGABRT
    assert got[1] == "FAIL:wrote-outside"
    assert got[2] == "FAIL:ValueError"
    assert got[3] == "FAIL:ModelLoadError:multi-line"
    assert got[4] == "FAIL:hang"
    assert 5 not in got and r["cases"] == 6
