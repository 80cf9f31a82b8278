"""Long end-to-end runs (make test-slow): the issue numbers for resnet8 on 28x28 MNIST, checked by the gate."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_resnet8_on_mnist_passes_every_gate_with_98pct_int8_agreement(tmp_path, cli):
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert cli("train", "--dataset", "mnist", "--model", "resnet8", "--quiet", "--out", run)[0] == 0
    code, _, err = cli("convert", run / "model.keras", "--out", bundle, "--jobs", "2")
    assert code == 0, err
    code, out, err = cli("parity", bundle, "--json")
    assert code == 0, err
    rep = json.loads(out)
    int8 = next(a for a in rep["artifacts"] if a["name"] == "tflite-int8")
    assert int8["agreement"] >= 0.98 and int8["delta_pp"] >= -1.0
    man = json.loads((bundle / "manifest.json").read_text())
    sizes = {a["name"]: a for a in man["artifacts"]}
    assert sizes["tflite-int8"]["bytes"] <= 0.30 * sizes["tflite-fp32"]["bytes"]
    assert sizes["tflite-int8-pruned"]["gzip_bytes"] <= 0.12 * sizes["tflite-fp32"]["bytes"]
