"""Loading and predicting: bundles, archives, bare files, batches, threads, and every bad-input case."""
import json
import shutil
import tarfile
import threading
import zipfile

import numpy as np
import pytest

import edgeport_runtime as er
from edgeport_runtime.errors import BackendUnavailableError, InputError, IntegrityError, ModelLoadError

X = None


def _inputs(bundle):
    return np.load(bundle / "check_inputs.npy")


def test_load_bundle_picks_default_artifact_and_says_backend(bundle):
    m = er.load(bundle)
    assert m.info["artifact"] == "tflite-int8" and m.info["backend"] == "litert"
    assert m.info["threads"] >= 1 and m.labels[:3] == ["0", "1", "2"]


@pytest.mark.parametrize("artifact", ["tflite-int8", "tflite-fp32", "onnx-fp32"])
def test_predict_matches_independent_oracle(bundle, artifact):
    """oracle_<artifact>.npy came from the interpreter driven by hand (LiteRT set_tensor/invoke with quantization
    done in tests/make_runtime_fixture.py, or a bare onnxruntime session), never from edgeport-runtime."""
    m = er.load(bundle, artifact=artifact)
    got = m.predict(_inputs(bundle))
    want = np.load(bundle / f"oracle_{artifact}.npy")
    if artifact == "tflite-int8":
        np.testing.assert_array_equal(got, want)  # same integer kernels, same quantization: bit-identical
    else:
        # the oracle ran sample by sample, predict runs the batch: other SIMD paths and thread splits change
        # float32 summation order; 1e-6 is a few float32 ulps of a softmax output
        np.testing.assert_allclose(got, want, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (8, 10)


def test_float_artifacts_agree_with_keras_outputs(bundle):
    keras_out = np.load(bundle / "oracle_keras.npy")
    for art in ("tflite-fp32", "onnx-fp32"):
        # float32 re-implementation of the same graph: 1e-4 (the recipe table's fp32 gate)
        np.testing.assert_allclose(er.load(bundle, artifact=art).predict(_inputs(bundle)), keras_out, atol=1e-4)


def test_predict_raw_exposes_int8(bundle):
    m = er.load(bundle)
    spec = m.inputs[0]
    q = er.quantize(_inputs(bundle), spec.scale, spec.zero_point)
    raw = m.predict_raw(q)
    assert raw.dtype == np.int8
    o = m.outputs[0]
    np.testing.assert_array_equal(er.dequantize(raw, o.scale, o.zero_point), m.predict(_inputs(bundle)))


@pytest.mark.parametrize("n", [1, 3, 255, 256, 257, 300])  # around MAX_CHUNK (256): chunked internally
def test_any_batch_size_matches_one_by_one(bundle, n):
    from edgeport_runtime.model import MAX_CHUNK

    assert MAX_CHUNK == 256  # the sizes above straddle it
    m = er.load(bundle)
    x = np.random.default_rng(0).random((n, 8, 8, 1), dtype=np.float32)
    batch = m.predict(x)
    single = np.concatenate([m.predict(x[i:i + 1]) for i in range(n)])  # every row, incl. 255, 256, 257
    assert batch.shape == (n, 10)
    np.testing.assert_array_equal(batch, single)  # int8: integer kernels give the same result per row


def test_bare_files_load(bundle):
    for f, backend in (("tflite-int8.tflite", "litert"), ("onnx-fp32.onnx", "onnxruntime")):
        m = er.load(bundle / f)
        assert m.info["backend"] == backend and m.manifest is None
        assert m.predict(_inputs(bundle)).shape == (8, 10)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_archives_load_and_clean_up(bundle, tmp_path, kind):
    arc = tmp_path / f"b.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(arc, "w") as z:
            for f in bundle.iterdir():
                z.write(f, f"bundle/{f.name}")
    else:
        with tarfile.open(arc, "w:gz") as t:
            t.add(bundle, arcname="bundle")
    m = er.load(arc)
    np.testing.assert_array_equal(m.predict(_inputs(bundle)), np.load(bundle / "oracle_tflite-int8.npy"))
    extracted = m._temp_dir
    m.close()
    assert not __import__("os").path.exists(extracted)


def test_archive_path_traversal_refused(tmp_path):
    arc = tmp_path / "evil.tar.gz"
    (tmp_path / "x").write_text("x")
    with tarfile.open(arc, "w:gz") as t:
        t.add(tmp_path / "x", arcname="../../escape")
    with pytest.raises(ModelLoadError, match="outside the bundle"):
        er.load(arc)


def test_threads_get_same_results_as_sequential(bundle):
    m = er.load(bundle, num_threads=2)
    rng = np.random.default_rng(1)
    xs = [rng.random((int(rng.integers(1, 20)), 8, 8, 1), dtype=np.float32) for _ in range(64)]
    expected = [m.predict(x) for x in xs]
    got = [None] * len(xs)
    errors = []

    def work(i):
        try:
            for _ in range(5):
                got[i] = m.predict(xs[i])
        except Exception as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(e, g)


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 8, 8), np.float32), r"expected rank 4 shape \['N', 8, 8, 1\], got rank 3 shape \[2, 8, 8\]"),
    (np.zeros((8, 8, 1), np.float32), r"Add a batch dimension"),
    (np.zeros((2, 8, 9, 1), np.float32), r"expected shape \['N', 8, 8, 1\], got \[2, 8, 9, 1\]"),
    (np.array([["a"]]), "expected real numbers"),
    (np.zeros((0, 8, 8, 1), np.float32), "empty batch"),
])
def test_bad_input_says_expected_vs_got(bundle, x, message):
    with pytest.raises(InputError, match=message):
        er.load(bundle).predict(x)


def test_nan_rejected_by_default_and_allowed_on_request(bundle):
    x = _inputs(bundle).copy()
    x[0, 0, 0, 0] = np.nan
    m = er.load(bundle)
    with pytest.raises(InputError, match="NaN/Inf"):
        m.predict(x)
    assert m.predict(x, allow_nonfinite=True).shape == (8, 10)


def test_predict_raw_wrong_dtype(bundle):
    with pytest.raises(InputError, match="predict_raw expects dtype int8"):
        er.load(bundle).predict_raw(np.zeros((1, 8, 8, 1), np.float32))


def test_hash_mismatch_refused_before_loading(bundle):
    f = bundle / "tflite-int8.tflite"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="sha256 mismatch"):
        er.load(bundle)


def test_truncated_bare_model_is_an_error_not_a_crash(bundle, tmp_path):
    for name in ("tflite-int8.tflite", "onnx-fp32.onnx"):
        bad = tmp_path / name
        bad.write_bytes((bundle / name).read_bytes()[:200])
        with pytest.raises(ModelLoadError):
            er.load(bad)


def test_garbage_tflite_rejected(tmp_path):
    f = tmp_path / "x.tflite"
    f.write_bytes(b"\0" * 64)
    with pytest.raises(ModelLoadError, match="not a TFLite flatbuffer"):
        er.load(f)


def test_unknown_schema_version_refused(bundle):
    d = json.loads((bundle / "manifest.json").read_text())
    d["schema_version"] = 2
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="schema_version 2"):
        er.load(bundle)


def test_manifest_scale_disagreeing_with_file_refused(bundle):
    d = json.loads((bundle / "manifest.json").read_text())
    d["artifacts"][1]["inputs"][0]["scale"] *= 2
    (bundle / "manifest.json").write_text(json.dumps(d))
    with pytest.raises(IntegrityError, match="inconsistent"):
        er.load(bundle)


def test_missing_backend_names_extra(bundle, monkeypatch):
    from edgeport_runtime import backends

    monkeypatch.setattr(backends, "is_installed", lambda n: False)
    with pytest.raises(BackendUnavailableError, match=r"pip install edgeport-runtime\["):
        er.load(bundle)


def test_missing_path_and_wrong_suffix(tmp_path):
    with pytest.raises(ModelLoadError, match="no such file"):
        er.load(tmp_path / "nope")
    (tmp_path / "m.pb").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="unsupported file type"):
        er.load(tmp_path / "m.pb")


def test_bad_thread_count_refused(bundle):
    with pytest.raises(er.UsageError, match="num_threads must be >= 1"):
        er.load(bundle, num_threads=0)


def test_missing_artifact_file(bundle):
    (bundle / "tflite-int8.tflite").unlink()
    shutil.rmtree(bundle / "nothing", ignore_errors=True)
    with pytest.raises(IntegrityError, match="missing"):
        er.load(bundle)


def test_int8_array_to_predict_refused_with_predict_raw_hint(bundle):
    m = er.load(bundle)  # tflite-int8: int8 input
    q = er.quantize(_inputs(bundle), m.inputs[0].scale, m.inputs[0].zero_point)
    with pytest.raises(InputError, match=r"got int8 data for a quantized int8 input.*predict_raw\(\)"):
        m.predict(q)
    assert m.predict(q.astype(np.float32)).shape == (8, 10)  # an explicit float conversion is the user's call


def test_predict_after_close_is_a_usage_error(bundle):
    m = er.load(bundle)
    m.close()
    for call in (lambda: m.predict(_inputs(bundle)), lambda: m.predict(_inputs(bundle)[:1]),
                 lambda: m.predict_raw(np.zeros((1, 8, 8, 1), np.int8))):
        with pytest.raises(er.UsageError, match="this model was closed"):
            call()


def test_interpreter_failure_at_predict_is_model_run_error(bundle):
    m = er.load(bundle)

    class Broken:
        def run(self, arrays):
            raise RuntimeError("XNNPACK: node 3 failed\nsecond line")

    m._session = Broken()  # what a corrupt-but-loadable model does at invoke time
    for x in (_inputs(bundle)[:1], _inputs(bundle).astype(np.float64)):  # the fast path and the checked path
        with pytest.raises(er.ModelRunError, match="RuntimeError: XNNPACK: node 3 failed second line") as e:
            m.predict(x)
        assert isinstance(e.value, ModelLoadError)


def test_flatbuffer_with_broken_offsets_refused_before_the_interpreter(bundle, tmp_path, monkeypatch):
    import ai_edge_litert.interpreter as litert

    data = bytearray((bundle / "tflite-fp32.tflite").read_bytes())
    root = int.from_bytes(data[:4], "little")
    data[root:root + 4] = (0x7FFFFFF0).to_bytes(4, "little")  # the root table's vtable offset points nowhere
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(bytes(data))
    created = []
    monkeypatch.setattr(litert, "Interpreter", lambda *a, **k: created.append(1))
    with pytest.raises(ModelLoadError, match="not a valid TFLite flatbuffer"):
        er.load(bad)
    assert created == []
