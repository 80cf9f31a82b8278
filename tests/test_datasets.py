"""Datasets and loaders: built-ins, .npz, CSV, image folders, the decode cache and every bad-input case."""
import numpy as np
import pytest
from conftest import make_npz

from edgeport.data.datasets import DATASETS, load_dataset
from edgeport_runtime.errors import InputError, UsageError


def test_load_builtin_digits_shapes_and_scale():
    ds = load_dataset("digits")
    assert ds.x.shape == (1797, 8, 8, 1) and ds.y.shape == (1797,)
    assert ds.x.dtype == np.float32 and 0.0 <= ds.x.min() and ds.x.max() == 1.0
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.preprocessing["input_scale"] == pytest.approx(1 / 16)


def test_load_builtin_mnist_is_28x28():
    ds = load_dataset("mnist")
    assert ds.x.shape == (5000, 28, 28, 1) and len(np.unique(ds.y)) == 10


def test_load_waveforms_is_deterministic():
    a, b = load_dataset("waveforms", seed=0), load_dataset("waveforms", seed=5)
    assert a.x.shape == (1200, 64, 3) and np.array_equal(a.x, b.x)


def test_builtin_table_names_match_loaders():
    for name in DATASETS:
        assert load_dataset(name).name == name


def test_unknown_dataset_name_gives_hint():
    with pytest.raises(UsageError, match="Did you mean 'digits'"):
        load_dataset("digitz")


def test_missing_dataset_path_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_dataset(str(tmp_path / "nope.npz"))


def test_npz_with_test_split_kept(tmp_path):
    p = make_npz(tmp_path / "d.npz", x_test=np.zeros((6, 8, 8, 1), np.float32), y_test=np.array([0, 1, 2] * 2))
    ds = load_dataset(str(p))
    assert ds.x_test.shape == (6, 8, 8, 1) and ds.y_test.tolist() == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("override, message", [
    ({"y_train": np.linspace(0, 2, 60)}, "non-integer"),
    ({"y_train": np.zeros(60, np.int64)}, "only one class"),
    ({"x_train": np.zeros((0, 8, 8, 1), np.float32), "y_train": np.zeros(0, np.int64)}, "no samples"),
    ({"x_train": np.zeros((60, 2, 2, 2, 2), np.float32)}, "rank 5"),
    ({"y_train": np.arange(59) % 3}, "60 samples but 59 labels"),
    ({"y_train": -(np.arange(60) % 3)}, ">= 0"),
])
def test_bad_npz_is_rejected_with_reason(tmp_path, override, message):
    p = make_npz(tmp_path / "bad.npz", **override)
    with pytest.raises(InputError, match=message):
        load_dataset(str(p))


def test_npz_with_nan_rejected(tmp_path):
    x = np.zeros((60, 4), np.float32)
    x[3, 1] = np.nan
    p = make_npz(tmp_path / "nan.npz", x_train=x)
    with pytest.raises(InputError, match="NaN"):
        load_dataset(str(p))


def test_npz_missing_arrays_named(tmp_path):
    np.savez(tmp_path / "w.npz", x=np.zeros((3, 2)))
    with pytest.raises(InputError, match=r"missing arrays \['x_train', 'y_train'\]"):
        load_dataset(str(tmp_path / "w.npz"))


def test_csv_string_labels_become_class_names(tmp_path):
    p = tmp_path / "s.csv"
    rows = ["a,b,label"] + [f"{i},{i * 2},{'cat' if i % 2 else 'dog'}" for i in range(20)]
    p.write_text("\n".join(rows))
    ds = load_dataset(str(p))
    assert ds.x.shape == (20, 2) and ds.class_names == ["cat", "dog"]
    assert ds.preprocessing["features"] == ["a", "b"]


def test_csv_unknown_label_column_hint(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("a,label\n1,0\n2,1\n")
    with pytest.raises(UsageError, match="Did you mean 'label'"):
        load_dataset(str(p), label_column="lable")


def test_csv_non_numeric_feature_rejected(tmp_path):
    p = tmp_path / "s.csv"
    p.write_text("a,b,label\n1,x,0\n2,y,1\n3,z,0\n4,w,1\n")
    with pytest.raises(InputError, match=r"\['b'\] are not"):
        load_dataset(str(p))


def _image_folder(root, n=4):
    from PIL import Image

    for c, value in (("dark", 20), ("light", 230)):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((10, 12, 3), value + i, np.uint8)).save(root / c / f"{i}.png")
    return root


def test_image_folder_resizes_and_skips_unreadable(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    (root / "dark" / "broken.png").write_bytes(b"not a png")
    ds = load_dataset(str(root), image_size=(6, 5), channels=1)
    assert ds.x.shape == (8, 6, 5, 1) and ds.class_names == ["dark", "light"]
    assert ds.notes["skipped_files"] == ["dark/broken.png"]
    assert ds.x[ds.y == 1].min() > 0.8  # light images scaled to [0, 1]


def test_image_folder_second_load_hits_cache(tmp_path):
    root = _image_folder(tmp_path / "imgs")
    cache = tmp_path / "c"
    first = load_dataset(str(root), image_size=(4, 4), channels=3, cache_dir=cache)
    second = load_dataset(str(root), image_size=(4, 4), channels=3, cache_dir=cache)
    assert first.notes["cache"] == "written" and second.notes["cache"] == "hit"
    assert np.array_equal(first.x, second.x) and second.x.shape == (8, 4, 4, 3)
    # a different size is a different cache entry, not a stale hit
    assert load_dataset(str(root), image_size=(5, 5), channels=3, cache_dir=cache).notes["cache"] == "written"


def test_image_folder_without_images_errors(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    with pytest.raises(InputError, match="no readable images"):
        load_dataset(str(tmp_path / "imgs"))


def test_unsupported_file_type_errors(tmp_path):
    (tmp_path / "d.txt").write_text("x")
    with pytest.raises(InputError, match="unsupported file type"):
        load_dataset(str(tmp_path / "d.txt"))
