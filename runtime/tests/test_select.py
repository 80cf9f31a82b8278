"""The on-device choice (edgeport_runtime.select): candidates, verification, the recorded choice, and loading a
release with it (load(), edgeport-run predict/info) with the command line overriding it."""
import hashlib
import json
import shutil

import numpy as np
import pytest

import edgeport_runtime as er
from edgeport_runtime import select as sel
from edgeport_runtime.cli import main as run_cli
from edgeport_runtime.errors import ModelLoadError

COMPILED = ["litert", "onnxruntime"]  # the interpreters the device profiles install (numpy is the fallback)


@pytest.fixture
def release(bundle, tmp_path):
    """A release directory as `edgeport deploy` leaves it: RELEASE/bundle/ (the fixture bundle)."""
    rel = tmp_path / "releases" / "20260101T000000-abcdef12"
    rel.mkdir(parents=True)
    shutil.move(str(bundle), str(rel / "bundle"))
    return rel


def _edit_manifest(rel, change):
    path = rel / "bundle" / "manifest.json"
    man = json.loads(path.read_text())
    change(man)
    path.write_text(json.dumps(man))


def _parity(passed, outcome=None):
    return {"litert": {"passed": passed, "outcome": outcome or ("pass" if passed else "fail")}}


def _write_selection(rel, artifact, backend, threads, **extra):
    sha = hashlib.sha256((rel / "bundle" / "manifest.json").read_bytes()).hexdigest()
    (rel / "selected.json").write_text(json.dumps({"schema_version": 1, "manifest_sha256": sha, "artifact": artifact,
                                                   "backend": backend, "threads": threads, **extra}))


def test_select_measures_every_passing_config_and_records_the_fastest(release, capsys):
    def gates(man):
        for a in man["artifacts"]:
            a["parity"] = _parity(a["name"] != "tflite-fp32")  # its gate failed: never a candidate

    _edit_manifest(release, gates)
    out = sel.select(str(release), max_threads=2, runs=20, budget_s=0.5, installed=COMPILED)
    configs = {(r["artifact"], r["backend"], r["threads"]) for r in out["table"]}
    assert configs == {("tflite-int8", "litert", 1), ("tflite-int8", "litert", 2),
                       ("onnx-fp32", "onnxruntime", 1), ("onnx-fp32", "onnxruntime", 2)}
    assert out["excluded"] == [{"artifact": "tflite-fp32", "why": "failed its parity gate"}]
    assert all(r["check"] == "pass" and r["latency_ms_p50"] > 0 and r["throughput_per_s"] > 0 for r in out["table"])
    # the documented rule: lowest p50, ties (equal to the 0.1 us the table keeps) to the higher throughput
    fastest = min(out["table"], key=lambda r: (r["latency_ms_p50"], -r["throughput_per_s"]))
    assert (out["artifact"], out["backend"], out["threads"]) == (fastest["artifact"], fastest["backend"],
                                                                 fastest["threads"])
    assert out["gated"] is True
    # the CLI writes it into the release, where load() finds it
    assert sel.main([str(release), "--max-threads", "1", "--runs", "10", "--budget-s", "0.2"]) == 0
    written = json.loads((release / "selected.json").read_text())
    assert written["manifest_sha256"] == hashlib.sha256((release / "bundle/manifest.json").read_bytes()).hexdigest()
    assert "selected " in capsys.readouterr().out


def test_select_never_chooses_a_config_that_misses_the_recorded_outputs(release):
    want = np.load(release / "bundle" / "check_tflite-int8.npy")
    np.save(release / "bundle" / "check_tflite-int8.npy", want + 0.25)  # wrong expectations for this artifact
    out = sel.select(str(release), max_threads=1, runs=10, budget_s=0.2, installed=COMPILED)
    bad = [r for r in out["table"] if r["artifact"] == "tflite-int8"]
    assert bad and all(r["check"].startswith("FAIL") and "latency_ms_p50" not in r for r in bad)
    assert out["artifact"] != "tflite-int8"
    assert out["gated"] is False  # no parity results in the manifest: every artifact was a candidate


def test_select_with_nothing_qualifying_exits_2_with_the_reasons(release, capsys):
    _edit_manifest(release, lambda man: [a.update(parity=_parity(False)) for a in man["artifacts"]])
    assert sel.main([str(release), "--max-threads", "1"]) == 2
    err = capsys.readouterr().err
    assert "no artifact qualifies" in err and "tflite-int8: failed its parity gate" in err
    assert not (release / "selected.json").exists()


def test_gate_of_reads_the_recorded_parity():
    art = er.Artifact("a", "a.tflite", "tflite", "r", "0" * 64, 1, [], [])
    assert sel.gate_of(art) == "not run"
    art.parity = {"litert": {"passed": True, "outcome": "inconclusive"}}
    assert sel.gate_of(art) == "inconclusive"
    art.parity = {"litert": {"passed": True, "outcome": "pass"}, "numpy": {"passed": False, "outcome": "fail"}}
    assert sel.gate_of(art) == "FAIL"


def test_load_release_uses_selection_and_explicit_options_override(release):
    _write_selection(release, "onnx-fp32", "onnxruntime", 1)
    for path in (release, release / "bundle"):  # the release or its bundle/ (what the deploy scripts pass)
        with er.load(path) as m:
            assert (m.info["artifact"], m.info["backend"], m.num_threads) == ("onnx-fp32", "onnxruntime", 1)
            assert m.info["selection"]["file"] == str(release / "selected.json")
    with er.load(release, num_threads=2) as m:  # threads overridden, the rest still selected
        assert (m.info["artifact"], m.num_threads) == ("onnx-fp32", 2)
    with er.load(release, artifact="tflite-int8") as m:  # another artifact: the selected backend/threads do not apply
        assert m.info["backend"] == "litert" and m.num_threads == er.model.default_threads()
    with er.load(release, backend="litert") as m:  # a tflite backend: the bundle's default tflite artifact
        assert m.info["artifact"] == "tflite-int8"
    with er.load(release, use_selection=False) as m:
        assert m.info["artifact"] == "tflite-int8" and m.selection is None


def test_predict_on_release_runs_the_selected_artifact(release, tmp_path, capsys):
    _write_selection(release, "tflite-fp32", "litert", 1)
    x = np.load(release / "bundle" / "check_inputs.npy")[:2]
    np.save(tmp_path / "x.npy", x)
    assert run_cli(["predict", str(release), "--input", str(tmp_path / "x.npy"), "--json"]) == 0
    got = np.array(json.loads(capsys.readouterr().out)["outputs"])
    # oracle: the outputs the toolkit recorded for that artifact (the smoke check's float tolerance)
    want = np.load(release / "bundle" / "check_tflite-fp32.npy")[:2]
    assert np.abs(got - want).max() <= 1e-5
    assert run_cli(["info", str(release)]) == 0
    assert "selected tflite-fp32 [litert, 1 thread]" in capsys.readouterr().out


@pytest.mark.parametrize("content, message", [
    ("{not json", "not a readable selection"),
    (json.dumps([1, 2]), "expected a JSON object"),
    (json.dumps({"schema_version": 1, "artifact": "tflite-int8", "backend": "litert", "threads": 0,
                 "manifest_sha256": "x"}), "'threads' must be an integer >= 1"),
    (json.dumps({"schema_version": 1, "artifact": "tflite-int8", "backend": "litert", "threads": 1,
                 "manifest_sha256": "0" * 64}), "made for another bundle"),
])
def test_bad_selection_file_is_refused_with_one_line(release, capsys, content, message):
    (release / "selected.json").write_text(content)
    with pytest.raises(ModelLoadError, match=message):
        er.load(release)
    assert run_cli(["info", str(release)]) == 2
    err = capsys.readouterr().err
    assert message in err and "--artifact, --backend and --threads" in err and len(err.strip().splitlines()) == 1
    # all three given: the file is not needed, so it is not read
    with er.load(release, artifact="tflite-int8", backend="litert", num_threads=1) as m:
        assert m.selection is None
