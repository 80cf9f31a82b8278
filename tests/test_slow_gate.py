"""Long end-to-end runs of the parity gate (make test-slow): models that beat Keras after fine-tuning, and the
small iris split, must not be failed; the statistics behind this are unit-tested in test_gate_stats.py."""
import json

import pytest

pytestmark = pytest.mark.slow


def test_resnet8_mnist_three_epochs_no_false_failures(tmp_path, cli):
    """Under-trained resnet8: QAT and pruning end several pp *better* than Keras; that must not fail the gate."""
    run, bundle = tmp_path / "run", tmp_path / "bundle"
    assert cli("train", "--dataset", "mnist", "--model", "resnet8", "--epochs", "3", "--quiet", "--out", run)[0] == 0
    code, _, err = cli("convert", run / "model.keras", "--out", bundle, "--jobs", "2")
    assert code == 0, err
    code, out, err = cli("parity", bundle, "--json")
    assert code == 0, err
    rep = json.loads(out)
    assert not any(a["failures"] for a in rep["artifacts"])
    assert rep["counts"]["fail"] == 0 and sum(rep["counts"].values()) == len(rep["artifacts"])
