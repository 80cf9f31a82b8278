"""Nothing read or written outside its place: manifest paths, field types, archives, temp directories."""
import gzip
import io
import json
import math
import os
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

import edgeport_runtime as er
from edgeport_runtime import manifest as manifest_mod
from edgeport_runtime.errors import IntegrityError, ModelLoadError, UsageError
from edgeport_runtime.manifest import contained_path, manifest_from_dict, read_manifest


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def _write(bundle, d):
    (bundle / "manifest.json").write_text(json.dumps(d))


# ------------------------------------------------------------------ paths named by a manifest

ESCAPES = ["../outside.tflite", "/etc/passwd", "sub/../../outside.tflite", "a\\b.tflite", "a\x00b", ""]
FIELDS = {  # how to put a path into each path-bearing field
    "artifact path": lambda d, v: d["artifacts"][1].__setitem__("path", v),
    "check_outputs": lambda d, v: d["artifacts"][1].__setitem__("check_outputs", v),
    "check.inputs": lambda d, v: d["check"].__setitem__("inputs", v),
    "check.keras_outputs": lambda d, v: d["check"].__setitem__("keras_outputs", v),
}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("path", ESCAPES)
def test_manifest_path_escape_refused_at_parse(bundle, field, path):
    d = _manifest(bundle)
    FIELDS[field](d, path)
    with pytest.raises(IntegrityError, match=r"'(path|check_outputs|inputs|keras_outputs)'"):
        manifest_from_dict(d)


def test_artifact_outside_bundle_refused_before_any_byte_is_read(bundle, monkeypatch):
    # a real model with the matching sha256 sits right outside the bundle: only the path rule can stop it
    outside = bundle.parent / "outside.tflite"
    outside.write_bytes((bundle / "tflite-int8.tflite").read_bytes())
    os.symlink(str(outside), str(bundle / "link.tflite"))
    d = _manifest(bundle)
    d["artifacts"][1]["path"] = "link.tflite"  # passes the string rules, escapes through the symlink
    _write(bundle, d)
    reads = []
    monkeypatch.setattr(manifest_mod, "sha256_file", lambda p: reads.append(p) or "0" * 64)
    with pytest.raises(IntegrityError, match="outside"):
        er.load(bundle)
    assert reads == []


def test_contained_path_resolves_inside_and_refuses_symlinks_out(tmp_path):
    base = tmp_path / "b"
    (base / "sub").mkdir(parents=True)
    (base / "sub" / "f").write_text("x")
    assert contained_path(base, "sub/f", "test") == (base / "sub" / "f").resolve()
    os.symlink(str(tmp_path), str(base / "up"))
    with pytest.raises(IntegrityError, match=r"test: 'up/x' resolves to .* outside"):
        contained_path(base, "up/x", "test")
    for bad in (None, 3, "/abs", "../x", "a/../../x", "a\\b", "a\x00b", "", "."):
        with pytest.raises(IntegrityError, match="^test: "):
            contained_path(base, bad, "test")


def test_smoke_refuses_check_inputs_outside_bundle(bundle):
    from edgeport_runtime.smoke import main as smoke_main

    os.symlink(str(bundle.parent), str(bundle / "up"))
    d = _manifest(bundle)
    d["check"]["inputs"] = "up/x.npy"
    np.save(bundle.parent / "x.npy", np.zeros((1, 8, 8, 1), np.float32))
    _write(bundle, d)
    assert smoke_main([str(bundle)]) == 2


def test_smoke_on_fixture_passes(bundle):
    from edgeport_runtime.smoke import smoke

    res = smoke(str(bundle))
    assert res["passed"] and len([r for r in res["artifacts"] if "passed" in r]) == 3


# ------------------------------------------------------------------ field types

def _nested(depth):
    v = []
    for _ in range(depth):
        v = [v]
    return v


@pytest.mark.parametrize("mutate, error, field", [
    (lambda d: d.__setitem__("artifacts", "x"), ModelLoadError, "'artifacts'"),
    (lambda d: d["artifacts"][0].__setitem__("bytes", "abc"), ModelLoadError, "'bytes'"),
    (lambda d: d["artifacts"][0].__setitem__("bytes", 1.5), ModelLoadError, "'bytes'"),
    (lambda d: d["artifacts"][1]["inputs"][0].__setitem__("scale", "abc"), ModelLoadError, "'scale'"),
    (lambda d: d["artifacts"][1]["inputs"][0].__setitem__("scale", math.nan), ModelLoadError, "'scale'"),
    (lambda d: d["artifacts"][1]["inputs"][0].__setitem__("scale", None), ModelLoadError, "zero_point"),
    (lambda d: d["artifacts"][1]["inputs"][0].__setitem__("zero_point", "0"), ModelLoadError, "'zero_point'"),
    (lambda d: d["artifacts"][1]["inputs"][0].__setitem__("shape", "N,8"), ModelLoadError, "'shape'"),
    (lambda d: d["artifacts"][1].__setitem__("inputs", {"a": 1}), ModelLoadError, "'inputs'"),
    (lambda d: d["artifacts"][1].__setitem__("name", 5), ModelLoadError, "'name'"),
    (lambda d: d.__setitem__("schema_version", True), IntegrityError, "schema_version True"),
    (lambda d: d.__setitem__("schema_version", 1.0), IntegrityError, "schema_version 1.0"),
    (lambda d: d.__setitem__("labels", [1, 2]), ModelLoadError, "'labels'"),
    (lambda d: d.__setitem__("check", "x"), ModelLoadError, "'check'"),
    (lambda d: d.__setitem__("extra", _nested(40)), ModelLoadError, "nested deeper"),
])
def test_manifest_wrong_type_names_the_field(bundle, mutate, error, field):
    d = _manifest(bundle)
    mutate(d)
    with pytest.raises(error, match=field) as e:
        manifest_from_dict(d)
    assert "\n" not in str(e.value)


def test_null_scale_on_int8_tensor_cannot_skip_the_consistency_check(bundle):
    d = _manifest(bundle)
    d["artifacts"][1]["inputs"][0].update(scale=None, zero_point=None)  # parses: looks like a float tensor
    _write(bundle, d)
    with pytest.raises(IntegrityError, match="inconsistent"):
        er.load(bundle)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ('{"schema_version": 1, "n": ' + "9" * 5000 + "}", "not valid JSON"),
    ("\udcff", "not valid JSON"),
])
def test_hostile_manifest_text_is_one_line_error(bundle, text, message):
    (bundle / "manifest.json").write_text(text, errors="surrogateescape")
    with pytest.raises(ModelLoadError, match=message) as e:
        read_manifest(bundle)
    assert "\n" not in str(e.value)


# ------------------------------------------------------------------ archives

def _tar(path, members, mode="w:gz"):
    """members: (name, bytes) or (TarInfo, None)."""
    with tarfile.open(path, mode) as t:
        for name, data in members:
            if isinstance(name, tarfile.TarInfo):
                t.addfile(name)
                continue
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))


def _bundle_members(bundle, prefix="bundle/"):
    return [(prefix + f.name, f.read_bytes()) for f in sorted(bundle.iterdir())]


@pytest.fixture
def tmpdir_watch(tmp_path, monkeypatch):
    """TMPDIR for the runtime's extraction: empty before, must be empty after."""
    import tempfile

    d = tmp_path / "tmp"
    d.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return d


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_decompression_bomb_stops_at_the_cap(bundle, tmp_path, tmpdir_watch, kind):
    arc = tmp_path / f"bomb.{kind}"
    zeros = bytes(64 << 20)  # 64 MiB of zeros compress to ~64 KB: a 1000:1 ratio
    if kind == "zip":
        with zipfile.ZipFile(arc, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in _bundle_members(bundle) + [("bundle/zeros.bin", zeros)]:
                z.writestr(name, data)
    else:
        _tar(arc, _bundle_members(bundle) + [("bundle/zeros.bin", zeros)])
    limit = 20 * arc.stat().st_size
    with pytest.raises(ModelLoadError, match=f"inflates to more than {max(limit, 1 << 20):,} bytes"):
        er.load(arc)
    assert list(tmpdir_watch.iterdir()) == []  # stopped and removed what it had written
    with er.load(arc, max_extract_bytes=80 << 20) as m:  # the caller may raise the cap for a trusted archive
        assert m.predict(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 10)


def test_extract_cap_from_environment(bundle, tmp_path, tmpdir_watch, monkeypatch):
    arc = tmp_path / "b.tar.gz"
    _tar(arc, _bundle_members(bundle))
    monkeypatch.setenv("EDGEPORT_MAX_EXTRACT_BYTES", "1000")
    with pytest.raises(ModelLoadError, match="inflates to more than 1,000 bytes"):
        er.load(arc)
    monkeypatch.setenv("EDGEPORT_MAX_EXTRACT_BYTES", "lots")
    with pytest.raises(UsageError, match="EDGEPORT_MAX_EXTRACT_BYTES='lots' is not an integer"):
        er.load(arc)


def test_too_many_members_refused(bundle, tmp_path, tmpdir_watch):
    arc = tmp_path / "many.tar"
    _tar(arc, _bundle_members(bundle) + [(f"bundle/m{i}", b"") for i in range(300)], mode="w")
    with pytest.raises(ModelLoadError, match="more than 256 members"):
        er.load(arc)
    assert list(tmpdir_watch.iterdir()) == []


@pytest.mark.parametrize("special", ["symlink", "hardlink", "device", "absolute-symlink"])
def test_links_and_devices_refused(bundle, tmp_path, tmpdir_watch, special):
    ti = tarfile.TarInfo("bundle/special")
    if special == "symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, "../../outside"
    elif special == "absolute-symlink":
        ti.type, ti.linkname = tarfile.SYMTYPE, str(tmp_path / "outside")
    elif special == "hardlink":
        ti.type, ti.linkname = tarfile.LNKTYPE, "bundle/manifest.json"
    else:
        ti.type, ti.devmajor, ti.devminor = tarfile.CHRTYPE, 1, 3
    arc = tmp_path / "b.tar.gz"
    _tar(arc, _bundle_members(bundle) + [(ti, None)])
    with pytest.raises(ModelLoadError, match="bundle/special") as e:
        er.load(arc)
    assert "\n" not in str(e.value)
    assert list(tmpdir_watch.iterdir()) == [] and not (tmp_path / "outside").exists()


def test_setuid_bits_are_not_extracted(bundle, tmp_path, tmpdir_watch):
    arc = tmp_path / "b.tar.gz"
    members = _bundle_members(bundle)
    with tarfile.open(arc, "w:gz") as t:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode = len(data), 0o6755
            t.addfile(ti, io.BytesIO(data))
    with er.load(arc) as m:
        modes = {p.name: p.stat().st_mode for p in (tmpdir_watch.iterdir().__next__() / "bundle").iterdir()}
        assert m.predict(np.zeros((1, 8, 8, 1), np.float32)).shape == (1, 10)
    assert modes and all(not (mode & 0o6000) for mode in modes.values())


def test_nested_offline_bundle_archive_loads(bundle, tmp_path, tmpdir_watch):
    """`edgeport bundle` archives put the bundle in TOP/bundle/ beside TOP/wheels/."""
    arc = tmp_path / "offline.tar.gz"
    _tar(arc, _bundle_members(bundle, "TOP/bundle/") + [("TOP/wheels/x.whl", b"PK"), ("TOP/install.sh", b"")])
    with er.load(arc) as m:
        np.testing.assert_array_equal(m.predict(np.load(bundle / "check_inputs.npy")),
                                      np.load(bundle / "oracle_tflite-int8.npy"))
    assert list(tmpdir_watch.iterdir()) == []


def test_two_bundles_in_one_archive_is_a_clear_error(bundle, tmp_path, tmpdir_watch):
    arc = tmp_path / "two.zip"
    with zipfile.ZipFile(arc, "w") as z:
        for name, data in _bundle_members(bundle, "A/") + _bundle_members(bundle, "B/"):
            z.writestr(name, data)
    with pytest.raises(ModelLoadError, match=r"holds 2 bundles \(A, B\); pass the one you mean"):
        er.load(arc)


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "tar"])
def test_corrupt_archive_error_is_one_line(bundle, tmp_path, tmpdir_watch, kind):
    arc = tmp_path / f"b.{kind}"
    arc.write_bytes(gzip.compress(b"not a tar at all " * 100) if kind == "tar.gz" else b"\x00garbage" * 100)
    with pytest.raises(ModelLoadError, match="cannot read the archive") as e:
        er.load(arc)
    assert "\n" not in str(e.value)
    assert list(tmpdir_watch.iterdir()) == []


# ------------------------------------------------------------------ temp directories

def _archive(bundle, tmp_path):
    arc = tmp_path / "b.tar.gz"
    _tar(arc, _bundle_members(bundle))
    return arc


def test_extracted_archive_removed_on_garbage_collection(bundle, tmp_path, tmpdir_watch):
    import gc

    m = er.load(_archive(bundle, tmp_path))
    extracted = m._temp_dir
    assert os.path.isdir(extracted)
    del m
    gc.collect()
    assert not os.path.exists(extracted) and list(tmpdir_watch.iterdir()) == []


def test_extracted_archive_removed_at_interpreter_exit(bundle, tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = ("import edgeport_runtime as er, sys\n"
            "m = er.load(sys.argv[1])\n"
            "globals()['keep'] = m  # never closed, still referenced at exit\n"
            "print(m._temp_dir)\n")
    out = subprocess.run([sys.executable, "-c", code, str(_archive(bundle, tmp_path))], capture_output=True,
                         text=True, env=dict(os.environ, TMPDIR=str(tmp)), check=True)
    assert out.stdout.strip().startswith(str(tmp))
    assert list(tmp.iterdir()) == []
