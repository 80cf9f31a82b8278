"""Convert-side safety: --force never deletes the run it converts, model files never run code (SavedModel op
allow-list), signals leave no partial bundle, no recipe process and no copy of the data behind."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeport.core.fsutil import MARKER, write_marker

ROOT = Path(__file__).resolve().parents[1]


def _one_line_exit_2(code, err, *needles):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err


def _fake_run(d: Path) -> Path:
    """A run directory as `edgeport train` leaves it (contents are never read: the checks come first)."""
    d.mkdir()
    write_marker(d, "train")
    for name in ("model.keras", "train.npz", "test.npz"):
        (d / name).write_bytes(b"not read")
    (d / "train.json").write_text("{}")
    return d


def test_force_onto_own_run_dir_refused_and_run_kept(tmp_path, cli):
    run = _fake_run(tmp_path / "run")
    code, _, err = cli("convert", run / "model.keras", "--out", run, "--force")
    _one_line_exit_2(code, err, "refusing to replace it", "holds the input")
    assert sorted(p.name for p in run.iterdir()) == [MARKER, "model.keras", "test.npz", "train.json", "train.npz"]


def test_force_onto_data_run_dir_refused(tmp_path, cli):
    run = _fake_run(tmp_path / "run")
    (tmp_path / "m.keras").write_bytes(b"x")
    code, _, err = cli("convert", tmp_path / "m.keras", "--data", run, "--out", run, "--force")
    _one_line_exit_2(code, err, "holds the input")
    assert (run / "train.npz").is_file()


def test_out_in_proc_refused_up_front(tmp_path, cli):
    run = _fake_run(tmp_path / "run")
    code, _, err = cli("convert", run / "model.keras", "--out", "/proc/edgeport-b")
    _one_line_exit_2(code, err, "not writable")


@pytest.mark.parametrize("line, needle", [
    ('calibration = "many"', "calibration must be an integer"),
    ("recipes = 3", "recipes must be a string or a list of strings"),
    ("[options]\ntflite-int8-pruned = 0.8", "must be a table"),
])
def test_convert_config_wrong_type_names_key(tmp_path, cli, line, needle):
    run = _fake_run(tmp_path / "run")
    cfg = tmp_path / "c.toml"
    cfg.write_text(line + "\n")
    code, _, err = cli("convert", run / "model.keras", "--out", tmp_path / "b", "--config", cfg)
    _one_line_exit_2(code, err, needle)


def _write_file_saved_model(path: Path, target: Path):
    import tensorflow as tf

    class Evil(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 6], tf.float32)])
        def serve(self, x):
            tf.io.write_file(str(target), "written by a model file")
            return {"y": tf.nn.softmax(x)}

    m = Evil()
    tf.saved_model.save(m, str(path), signatures={"serving_default": m.serve})


def _data(tmp_path, n=60, features=6) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2
    np.savez(tmp_path / "d.npz", x_train=(rng.normal(0, 0.1, (n, features)) + y[:, None]).astype(np.float32),
             y_train=y)
    return tmp_path / "d.npz"


def test_saved_model_writing_files_refused_before_it_runs(tmp_path, cli):
    target = tmp_path / "pwned.txt"
    _write_file_saved_model(tmp_path / "sm", target)
    code, _, err = cli("convert", tmp_path / "sm", "--data", _data(tmp_path), "--out", tmp_path / "b",
                       "--recipes", "tflite-fp32")
    _one_line_exit_2(code, err, "uses op WriteFile", "function __inference_serve", "--unsafe-load")
    assert not target.exists() and not (tmp_path / "b").exists()


def _node(op, name="n", call=None):
    from tensorflow.core.framework import attr_value_pb2, node_def_pb2

    n = node_def_pb2.NodeDef(op=op, name=name)
    if call:
        n.attr["f"].CopyFrom(attr_value_pb2.AttrValue(func=attr_value_pb2.NameAttrList(name=call)))
    return n


def test_op_scan_allows_saver_ops_only_in_saver_functions():
    from edgeport.convert.opscan import scan_graph_ops

    saver = "__inference__traced_save_42"
    ok = {"<graph>": [_node("StatefulPartitionedCall", call=saver)], saver: [_node("SaveV2")],
          "__inference_call_1": [_node("MatMul"), _node("ReadVariableOp")]}
    assert scan_graph_ops(ok) is None
    assert scan_graph_ops({"__inference_serve_7": [_node("SaveV2")]}) == ("SaveV2", "__inference_serve_7")
    assert scan_graph_ops({"f": [_node("EagerPyFunc")]}) == ("EagerPyFunc", "f")
    sneaky = {"__inference_serve_7": [_node("StatefulPartitionedCall", call=saver)], saver: [_node("SaveV2")]}
    assert scan_graph_ops(sneaky)[1] == "__inference_serve_7"


def _tf_keras_model(lambda_layer=False):
    import tf_keras as tfk

    layers = [tfk.layers.Input((6,)), tfk.layers.Dense(8, activation="relu"), tfk.layers.Dense(2, activation="softmax")]
    if lambda_layer:
        layers.insert(1, tfk.layers.Lambda(lambda t: t * 2))
    m = tfk.Sequential(layers)
    m.compile("adam", "sparse_categorical_crossentropy")
    return m


def test_tf_keras_saved_model_loads_as_layers(tmp_path):
    from edgeport.convert.bridge import bridge_model
    from edgeport.convert.source import load_source

    m = _tf_keras_model()
    m.save(tmp_path / "sm", save_format="tf")
    assert (tmp_path / "sm" / "keras_metadata.pb").is_file()
    src = load_source(tmp_path / "sm")
    assert src.kind == "tf_keras" and src.input_shape == (6,)
    x = np.random.default_rng(1).random((5, 6), dtype=np.float32)
    # same weights, same graph, same process: only float rounding may differ
    np.testing.assert_allclose(src.predict(x), m(x).numpy(), atol=1e-6)
    clone = bridge_model(src)  # QAT / pruning apply: the bridge no longer refuses it as "without Keras layers"
    np.testing.assert_allclose(clone(x).numpy(), m(x).numpy(), atol=1e-6)


def test_tf_keras_saved_model_with_lambda_refused(tmp_path):
    from edgeport.convert.source import load_source
    from edgeport_runtime.errors import ModelLoadError

    _tf_keras_model(lambda_layer=True).save(tmp_path / "sm", save_format="tf")
    with pytest.raises(ModelLoadError, match="Python code"):
        load_source(tmp_path / "sm")


def test_tf_keras_saved_model_prunes_without_stray_warnings(tmp_path):
    _tf_keras_model().save(tmp_path / "sm", save_format="tf")
    proc = subprocess.run([sys.executable, "-m", "edgeport.cli", "convert", str(tmp_path / "sm"), "--data",
                           str(_data(tmp_path)), "--out", str(tmp_path / "b"), "--recipes", "tflite-int8-pruned"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "b" / "manifest.json").read_text())["source"]["kind"] == "tf_keras"
    assert "out-of-range" not in proc.stderr and "WARNING" not in proc.stderr, proc.stderr


def _children(pid: int):
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie no longer runs; reaping is up to its new parent


def _start_convert(tmp_path):
    import keras

    inp = keras.Input((6,))
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(keras.layers.Dense(16)(inp))).save(
        tmp_path / "m.keras")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "edgeport.cli", "convert", str(tmp_path / "m.keras"), "--data",
                             str(_data(tmp_path, n=400)), "--out", str(tmp_path / "b"), "--jobs", "2",
                             "--recipes", "tflite-int8-qat,tflite-int8-pruned"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline:  # wait until recipes run: a staged bundle exists and converters are alive
        kids = _children(proc.pid)
        if [p for p in tmp_path.iterdir() if p.name.endswith(".partial")] and len(kids) >= 2:
            time.sleep(1.0)
            return proc, _children(proc.pid), tmpdir
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("conversion did not reach the recipe stage")


def _wait_gone(pids, seconds=30):
    deadline = time.time() + seconds
    while time.time() < deadline and not all(_gone(p) for p in pids):
        time.sleep(0.2)
    return [p for p in pids if not _gone(p)]


def test_sigterm_during_convert_leaves_nothing(tmp_path):
    proc, kids, tmpdir = _start_convert(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "SIGTERM" in err and len(err.strip().splitlines()) == 1, err
    assert _wait_gone(kids) == []
    assert not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".b.")]
    assert list(tmpdir.iterdir()) == []  # the work dir with the copy of the training data is gone


def test_sigkill_during_convert_children_die_and_next_run_cleans_up(tmp_path):
    proc, kids, tmpdir = _start_convert(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert _wait_gone(kids) == []  # PR_SET_PDEATHSIG: converters do not outlive the parent
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert [p for p in tmpdir.iterdir() if p.name.startswith("edgeport-convert-")]
    env = dict(os.environ, TMPDIR=str(tmpdir))
    done = subprocess.run([sys.executable, "-m", "edgeport.cli", "convert", str(tmp_path / "m.keras"), "--data",
                           str(tmp_path / "d.npz"), "--out", str(tmp_path / "b"), "--recipes", "tflite-fp32"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert list(tmpdir.iterdir()) == []


def test_ort_axis_warning_dropped_other_warnings_kept(caplog):
    import logging

    from edgeport.convert.worker import quiet_ort_axis_warning

    quiet_ort_axis_warning()
    quiet_ort_axis_warning()  # idempotent: one filter
    with caplog.at_level(logging.WARNING):
        logging.warning("Axis 1 is out-of-range for weight 'w' with rank 1")
        logging.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    assert sum(type(f).__name__ == "_OrtAxisFilter" for f in logging.getLogger().filters) == 1


def test_keras_file_with_custom_class_or_nested_lambda_refused(tmp_path):
    import keras

    from edgeport.convert.source import load_source
    from edgeport_runtime.errors import ModelLoadError

    @keras.saving.register_keras_serializable(package="edgeport_test")
    class Echo(keras.layers.Layer):
        def call(self, x):
            return x

    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2)(Echo()(inp))).save(tmp_path / "custom.keras")
    inner_in = keras.Input((4,))
    inner = keras.Model(inner_in, keras.layers.Lambda(lambda t: t * 2)(inner_in))
    inp = keras.Input((4,))
    keras.Model(inp, keras.layers.Dense(2)(inner(inp))).save(tmp_path / "nested.keras")
    with pytest.raises(ModelLoadError, match=r"edgeport_test>Echo.*--unsafe-load"):
        load_source(tmp_path / "custom.keras")  # refused although the class is registered in this process
    with pytest.raises(ModelLoadError, match=r"Lambda.*--unsafe-load"):
        load_source(tmp_path / "nested.keras")
    assert load_source(tmp_path / "custom.keras", unsafe=True).kind == "keras"
