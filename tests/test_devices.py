"""Device profiles and offline bundles (no network beyond pip's registry for the wheelhouse)."""
import json
import tarfile

import pytest

from edgeport.devices.offline import archive_summary, make_offline_bundle
from edgeport.devices.profiles import BACKEND_WHEELS, get_profile, load_profiles
from edgeport_runtime.errors import UsageError

EXPECTED = {"rpi-zero-2w", "rpi3", "rpi4", "rpi5", "rpi-32bit", "jetson-nano-cpu", "x86_64"}


def test_every_profile_loads_with_pinned_wheels():
    profiles = load_profiles()
    assert set(profiles) == EXPECTED
    for p in profiles.values():
        assert p.pip_platforms and all(p.arch.replace("armv7l", "armv7l") in t for t in p.pip_platforms)
        assert all("==" not in v and v[0].isdigit() for v in p.wheels.values())  # exact versions
        assert p.backend in p.backends and any(w in BACKEND_WHEELS for w in p.wheels)


def test_what_profiles_can_run():
    rpi32, rpi4 = get_profile("rpi-32bit"), get_profile("rpi4")
    assert rpi32.can_run("onnx", "int8")[0] is False
    assert "dynamic-range" in rpi32.can_run("tflite", "dynamic-int8")[1]
    assert rpi32.can_run("tflite", "int8") == (True, "")
    assert rpi4.can_run("onnx", "int8") == (True, "") and rpi4.can_run("tflite", "dynamic-int8")[0]
    assert get_profile("jetson-nano-cpu").formats == ["tflite"]  # glibc 2.27: no onnxruntime 1.31


def test_unknown_profile_hint():
    with pytest.raises(UsageError, match="Did you mean 'rpi4'"):
        get_profile("rpi44")


def test_profile_unknown_key_rejected(tmp_path):
    src = (get_profile.__globals__["PROFILE_DIR"] / "rpi4.toml").read_text()
    (tmp_path / "mine.toml").write_text("cores_count = 4\n" + src)
    with pytest.raises(UsageError, match="unknown key 'cores_count'"):
        get_profile(str(tmp_path / "mine.toml"))


def test_devices_cli_lists_profiles(cli):
    code, out, _ = cli("devices")
    assert code == 0 and all(name in out for name in EXPECTED) and "no dynamic-range" in out


def test_offline_bundle_for_32bit_pi_leaves_out_what_it_cannot_run(full_bundle, tmp_path, capsys):
    ob = make_offline_bundle(str(full_bundle), get_profile("rpi-32bit"), str(tmp_path / "a.tar.gz"))
    warnings = capsys.readouterr().out
    assert "leaving out tflite-dynamic" in warnings and "leaving out onnx-int8" in warnings
    names = archive_summary(ob.path)
    top = next(iter(names)).split("/")[0]
    assert f"{top}/wheels/tflite_runtime-2.14.0-cp311-cp311-manylinux_2_34_armv7l.whl" in names
    assert not any("numpy" in n for n in names)  # the OS provides numpy on armv7
    assert any(n.startswith(f"{top}/wheels/edgeport_runtime-") for n in names)
    with tarfile.open(ob.path) as t:
        man = json.loads(t.extractfile(f"{top}/bundle/manifest.json").read())
        env = t.extractfile(f"{top}/device.env").read().decode()
    assert {a["name"] for a in man["artifacts"]} == {"tflite-fp32", "tflite-fp16", "tflite-int8",
                                                     "tflite-int8-qat", "tflite-int8-pruned"}
    assert man["default_artifact"] == "tflite-int8" and "SYSTEM_NUMPY=1" in env and "EXTRAS=tflite" in env


def test_offline_bundle_for_rpi4_has_aarch64_wheels(full_bundle, tmp_path):
    ob = make_offline_bundle(str(full_bundle), get_profile("rpi4"), str(tmp_path / "b.tar.gz"))
    wheels = [n.rsplit("/", 1)[-1] for n in archive_summary(ob.path) if n.endswith(".whl")]
    assert any(w.startswith("ai_edge_litert-2.3.0") and "aarch64" in w for w in wheels)
    assert any(w.startswith("numpy-2.4.6") and "aarch64" in w for w in wheels)
    assert any(w.startswith("onnxruntime-1.31.1") and "aarch64" in w for w in wheels)
    assert not any("x86_64" in w for w in wheels)
    with pytest.raises(UsageError, match="--force"):
        make_offline_bundle(str(full_bundle), get_profile("rpi4"), str(tmp_path / "b.tar.gz"))
