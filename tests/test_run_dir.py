"""The run directory's one owner (edgeport.data.run): what the trainer writes is what every stage reads back."""
from __future__ import annotations

import numpy as np

from edgeport.data import run


def test_run_file_names_match_the_documented_layout():
    # README and train.json consumers (devices, users' scripts) rely on these exact names
    assert run.RUN_FILES == ("model.keras", "train.json", "train.npz", "test.npz")
    assert run.HISTORY_FILE == "history.png"


def test_written_run_reads_back_identical(tmp_path):
    rng = np.random.default_rng(0)
    xtr, xva, xte = (rng.normal(size=(n, 4)).astype(np.float32) for n in (10, 3, 5))
    ytr, yva, yte = np.arange(10) % 2, np.arange(3) % 2, np.arange(5) % 2
    record = {"task": "classification", "class_names": ["a", "b"], "preprocessing": {"input_scale": 0.5}}
    run.write_splits(tmp_path, xtr, ytr, xva, yva, xte, yte)
    run.write_record(tmp_path, record)
    assert run.is_run_dir(tmp_path) and run.read_record(tmp_path) == record
    d = run.load_run_data(tmp_path)
    for got, want in ((d.x_train, xtr), (d.y_train, ytr), (d.x_val, xva), (d.y_val, yva), (d.x_test, xte),
                      (d.y_test, yte)):
        np.testing.assert_array_equal(got, want)
    assert (d.task, d.labels, d.preprocessing, d.run_dir) == ("classification", ["a", "b"], {"input_scale": 0.5},
                                                              tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["test.npz", "train.json", "train.npz"]  # no temp files


def test_run_without_validation_split_reads_back_none(tmp_path):
    x, y = np.zeros((4, 2), np.float32), np.array([0, 1, 0, 1])
    run.write_splits(tmp_path, x, y, None, None, x, y)
    run.write_record(tmp_path, {"task": "classification"})
    d = run.load_run_data(tmp_path)
    assert d.x_val is None and d.y_val is None


def test_read_record_outside_a_run_is_empty(tmp_path):
    assert run.read_record(tmp_path) == {} and not run.is_run_dir(tmp_path)
