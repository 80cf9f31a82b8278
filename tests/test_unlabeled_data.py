"""--data without labels: loaders, preprocessing options, random calibration and the held-back split (numpy only)."""
import numpy as np
import pytest
from PIL import Image

from edgeport_runtime.errors import InputError, UsageError
from edgeport.data.run import calibration_samples, holdout_split, resolve_data
from edgeport.data.unlabeled import InputOptions, load_samples, parse_image_size


def test_calibration_from_class_sorted_unlabeled_array_draws_every_class():
    blocks = np.repeat(np.arange(3), 200)  # what the test knows and the sampler does not: rows sorted by class
    x = blocks.astype(np.float32).reshape(-1, 1)
    got = calibration_samples(x, None, 150, seed=0)[:, 0].astype(int)
    counts = np.bincount(got, minlength=3)
    # a uniform draw of 150 from 3 equal blocks: each count ~50; 30 is > 4 standard deviations (~5.3) below
    assert counts.min() >= 30 and len(got) == 150 and len(np.unique(got)) == 3


def test_calibration_is_seeded_and_without_repeats():
    x = np.arange(500, dtype=np.float32).reshape(-1, 1)
    a, b = calibration_samples(x, None, 100, 7), calibration_samples(x, None, 100, 7)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and not np.array_equal(a[:, 0], np.arange(100))


def test_holdout_split_is_disjoint_and_covers_everything():
    x = np.arange(50, dtype=np.float32).reshape(-1, 1)
    tr, te = holdout_split(x, 0.2, 3)
    assert len(te) == 10 and len(tr) == 40
    assert sorted(np.concatenate([tr, te])[:, 0].tolist()) == list(range(50))
    assert te[:, 0].tolist() != list(range(40, 50))  # not the tail of the file


def test_load_npy_applies_scale_and_offset(tmp_path):
    raw = np.arange(24, dtype=np.uint8).reshape(6, 4)
    np.save(tmp_path / "x.npy", raw)
    ds = load_samples(str(tmp_path / "x.npy"), InputOptions(input_scale=0.5, input_offset=-1.0))
    assert ds.y is None and ds.kind == "tabular"
    np.testing.assert_array_equal(ds.x, raw.astype(np.float32) * 0.5 - 1.0)
    assert ds.preprocessing["input_scale"] == 0.5 and ds.preprocessing["input_offset"] == -1.0


@pytest.mark.parametrize("key", ["x_train", "x"])
def test_load_x_only_npz_is_unlabeled(tmp_path, key):
    x = np.random.default_rng(0).random((10, 4, 4, 1)).astype(np.float32)
    np.savez(tmp_path / "d.npz", **{key: x})
    ds = load_samples(str(tmp_path / "d.npz"))
    assert ds.y is None and ds.kind == "image"
    np.testing.assert_array_equal(ds.x, x)


def test_load_npz_without_x_names_what_it_found(tmp_path):
    np.savez(tmp_path / "d.npz", images=np.zeros((3, 2)))
    with pytest.raises(InputError, match=r"no x_train or x array.*images"):
        load_samples(str(tmp_path / "d.npz"))


def test_load_csv_with_continuous_last_column_is_unlabeled(tmp_path):
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(40, 3))
    (tmp_path / "f.csv").write_text("a,b,c\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in vals))
    ds = load_samples(str(tmp_path / "f.csv"))
    assert ds.y is None and ds.x.shape == (40, 3) and ds.preprocessing["features"] == ["a", "b", "c"]


def test_load_csv_as_wide_as_the_model_is_unlabeled_else_labelled(tmp_path):
    rows = [f"{i % 3},{i % 5},{i % 2}" for i in range(30)]  # integer columns: the last could be a label
    (tmp_path / "f.csv").write_text("a,b,c\n" + "\n".join(rows))
    assert load_samples(str(tmp_path / "f.csv"), model_shape=(3,)).y is None
    labelled = load_samples(str(tmp_path / "f.csv"), model_shape=(2,))
    assert labelled.x.shape == (30, 2) and labelled.y.tolist() == [i % 2 for i in range(30)]
    assert load_samples(str(tmp_path / "f.csv"), InputOptions(labels="none")).x.shape == (30, 3)


def _images(folder, n, value):
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(np.full((6, 5), value + i, np.uint8)).save(folder / f"{i}.png")


def test_image_folder_without_subfolders_uses_model_size(tmp_path):
    _images(tmp_path / "imgs", 4, 10)
    ds = load_samples(str(tmp_path / "imgs"), model_shape=(6, 5, 1))
    assert ds.y is None and ds.x.shape == (4, 6, 5, 1)
    np.testing.assert_allclose(sorted(ds.x[:, 0, 0, 0]), np.array([10, 11, 12, 13]) / 255.0, rtol=1e-6)
    assert ds.preprocessing["image_size"] == [6, 5] and ds.preprocessing["input_scale"] == pytest.approx(1 / 255)


def test_image_folder_with_classes_is_labelled_unless_no_labels(tmp_path):
    _images(tmp_path / "imgs" / "cat", 3, 10)
    _images(tmp_path / "imgs" / "dog", 3, 100)
    ds = load_samples(str(tmp_path / "imgs"), model_shape=(6, 5, 1))
    assert ds.class_names == ["cat", "dog"] and sorted(ds.y.tolist()) == [0, 0, 0, 1, 1, 1]
    flat = load_samples(str(tmp_path / "imgs"), InputOptions(labels="none"), model_shape=(6, 5, 1))
    assert flat.y is None and len(flat.x) == 6


def test_nchw_layout_and_user_scale_on_labelled_images(tmp_path):
    _images(tmp_path / "imgs" / "a", 2, 0)
    _images(tmp_path / "imgs" / "b", 2, 50)
    opts = InputOptions(input_scale=1 / 127.5, input_offset=-1.0, layout="NCHW", channels=3, image_size=(6, 5))
    ds = load_samples(str(tmp_path / "imgs"), opts)
    assert ds.x.shape == (4, 3, 6, 5) and ds.preprocessing["layout"] == "NCHW"
    # gray value 50 -> 50 / 127.5 - 1 in every channel
    b = ds.x[ds.y == 1]
    np.testing.assert_allclose(sorted(b[:, 0, 0, 0]), [50 / 127.5 - 1, 51 / 127.5 - 1], rtol=1e-5)


def test_single_class_labels_are_dropped_not_refused(tmp_path):
    np.savez(tmp_path / "one.npz", x_train=np.zeros((8, 3), np.float32), y_train=np.zeros(8, np.int64))
    ds = load_samples(str(tmp_path / "one.npz"))
    assert ds.y is None and "single class" in ds.notes["labels_dropped"]


def test_eval_without_labels_is_refused(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 3), np.float32))
    with pytest.raises(InputError, match="--eval .*no labels"):
        resolve_data(tmp_path / "m.keras", str(tmp_path / "x.npy"), 0, eval_path=str(tmp_path / "x.npy"))


def test_unlabeled_data_splits_into_calibration_and_held_back(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(40, dtype=np.float32).reshape(20, 2))
    d = resolve_data(tmp_path / "m.keras", str(tmp_path / "x.npy"), 0)
    assert d.y_train is None and d.y_test is None and not d.labelled and not d.accuracy_measurable
    assert len(d.x_train) == 16 and len(d.x_test) == 4


@pytest.mark.parametrize("bad", [dict(layout="NWHC"), dict(channels=2), dict(input_scale=float("nan"))])
def test_bad_input_options_are_usage_errors(bad):
    with pytest.raises(UsageError):
        InputOptions(**bad).check()


def test_parse_image_size():
    assert parse_image_size("96x64") == (96, 64) and parse_image_size("32") == (32, 32)
    with pytest.raises(UsageError, match="HEIGHTxWIDTH"):
        parse_image_size("big")


def test_eval_npz_with_only_test_arrays_is_labelled(tmp_path):
    np.savez(tmp_path / "e.npz", x_test=np.full((4, 2), 255, np.uint8), y_test=np.array([0, 1, 0, 1]))
    ds = load_samples(str(tmp_path / "e.npz"), InputOptions(input_scale=1 / 255))
    assert ds.y.tolist() == [0, 1, 0, 1]
    np.testing.assert_allclose(ds.x, 1.0, rtol=1e-6)


def test_toml_input_options_reach_the_loader(tmp_path):
    from edgeport.convert.cli import _input_options

    opts = _input_options({"input_scale": 1, "image_size": [48, 64], "no_labels": True, "layout": "NCHW"})
    assert opts == InputOptions(input_scale=1.0, image_size=(48, 64), layout="NCHW", labels="none")


def test_toml_input_option_of_wrong_type_exits_2(tmp_path, cli):
    (tmp_path / "c.toml").write_text('[convert]\ninput_scale = "tiny"\n')
    code, _, err = cli("convert", tmp_path / "m.keras", "--out", tmp_path / "o", "--config", tmp_path / "c.toml")
    assert code == 2 and "input-scale must be a number" in err
