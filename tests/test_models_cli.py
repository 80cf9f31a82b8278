"""`edgeport models`: a static table that needs no TensorFlow, checked against models Keras really builds."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeport.train.zoo import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_static_table_matches_keras_built_model(name):
    # Oracle: Keras builds the model at the reference input; its own count_params() is independent of the table.
    # MACs come from count_macs, which tests/test_zoo.py checks against a hand computation.
    from edgeport.core import tfenv

    tfenv.import_tf()
    from edgeport.train.zoo import build_model, count_macs

    row = MODELS[name]
    model = build_model(name, row.reference_shape, row.reference_classes or 10)
    assert (row.params, row.macs) == (int(model.count_params()), count_macs(model))


def test_models_runs_without_importing_tensorflow():
    # A fresh interpreter: in-process the test session may already have TensorFlow loaded.
    code = ("import json, sys\n"
            "from edgeport.cli import main\n"
            "rc = main(['models', '--json'])\n"
            "heavy = sorted(m for m in ('tensorflow', 'keras', 'tf_keras') if m in sys.modules)\n"
            "print('HEAVY=' + json.dumps(heavy))\n"
            "sys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    table, heavy_line = proc.stdout.rsplit("HEAVY=", 1)
    assert json.loads(heavy_line) == []
    rows = json.loads(table)
    assert [r["name"] for r in rows] == list(MODELS)
    assert {r["name"]: (r["params"], r["macs"]) for r in rows} == {
        m.name: (m.params, m.macs) for m in MODELS.values()}


def test_models_table_lists_every_model(cli):
    code, out, err = cli("models")
    assert code == 0, err
    lines = out.splitlines()
    for m in MODELS.values():
        row = next(line for line in lines if line.startswith(m.name + " "))
        assert f"{m.params:,}" in row and f"{m.macs:,}" in row
