"""Device profiles and offline bundles (no network beyond pip's registry for the wheelhouse)."""
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from edgeport.devices.offline import archive_summary, make_offline_bundle
from edgeport.devices.profiles import PROFILE_DIR, backend_wheels, get_profile, load_profiles
from edgeport_runtime.errors import IntegrityError, UsageError

EXPECTED = {"rpi-zero-2w", "rpi3", "rpi4", "rpi5", "rpi-32bit", "jetson-nano-cpu", "x86_64",
            "rpi-zero-2w-trixie", "rpi3-trixie", "rpi4-trixie", "rpi5-trixie", "rpi-32bit-trixie"}
# Debian's own Python per release (bookworm ships 3.11, trixie 3.13): what a profile of that OS must say
DEBIAN_PYTHON = {"bookworm": "3.11", "trixie": "3.13"}


def test_every_profile_loads_with_pinned_wheels():
    profiles = load_profiles()
    assert set(profiles) == EXPECTED
    for p in profiles.values():
        # pip matches --platform literally: a tag of another architecture would fetch wheels that cannot run
        assert p.pip_platforms and all(t.endswith("_" + p.arch) for t in p.pip_platforms), p.name
        assert all("==" not in v and v[0].isdigit() for v in p.wheels.values())  # exact versions
        assert p.backend in p.backends and any(w in backend_wheels() for w in p.wheels)


def test_profiles_state_os_release_and_its_python():
    profiles = load_profiles()
    for p in profiles.values():
        if p.name.startswith("rpi"):  # Raspberry Pi OS is Debian: its release fixes the Python version
            assert p.os in ("debian-12 bookworm", "debian-13 trixie"), p.name
            assert p.python == DEBIAN_PYTHON[p.os_codename], p.name
            assert p.name.endswith("-trixie") == (p.os_codename == "trixie"), p.name
    assert profiles["x86_64"].os == "any" and profiles["x86_64"].os_codename == ""
    # every bookworm Pi profile has its trixie twin, with the same hardware
    for p in profiles.values():
        if p.os_codename == "bookworm" and p.name.startswith("rpi"):
            t = profiles[f"{p.name}-trixie"]
            assert (t.arch, t.cores, t.ram_mb, t.qemu_cpu) == (p.arch, p.cores, p.ram_mb, p.qemu_cpu), p.name


def test_what_profiles_can_run():
    rpi32, rpi4 = get_profile("rpi-32bit"), get_profile("rpi4")
    assert rpi32.can_run("onnx", "int8")[0] is False
    assert "dynamic-range" in rpi32.can_run("tflite", "dynamic-int8")[1]
    assert rpi32.can_run("tflite", "int8") == (True, "")
    assert rpi4.can_run("onnx", "int8") == (True, "") and rpi4.can_run("tflite", "dynamic-int8")[0]
    assert get_profile("jetson-nano-cpu").formats == ["tflite"]  # glibc 2.27: no onnxruntime 1.31
    t32 = get_profile("rpi-32bit-trixie")  # the numpy backend: no interpreter wheel for armv7 on Python 3.13
    assert t32.backends == ["numpy"] and t32.formats == ["tflite"] and t32.system_numpy
    assert t32.can_run("onnx", "int8")[0] is False and t32.can_run("tflite", "dynamic-int8") == (True, "")
    assert get_profile("rpi-32bit").backends == ["tflite-runtime"]  # bookworm keeps tflite-runtime


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
    row = next(ln.split() for ln in out.splitlines() if ln.startswith("rpi-32bit-trixie "))
    assert row[:5] == ["rpi-32bit-trixie", "armv7l", "debian-13", "trixie", "3.13"] and "numpy" in row


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
    _assert_serve_wheels(names, env)


def _assert_serve_wheels(names, env):
    """`edgeport-run serve` installs offline: its pure-Python wheels are in, and install.sh asks for [serve]."""
    wheels = {n.rsplit("/", 1)[-1].split("-")[0] for n in names if n.endswith(".whl")}
    assert {"starlette", "uvicorn", "prometheus_client", "anyio", "h11", "click"} <= wheels, wheels
    assert any(line.startswith("EXTRAS=") and "serve" in line.split("=", 1)[1].split(",")
               for line in env.splitlines()), env


def test_offline_bundle_for_32bit_trixie_pi_has_numpy_backend_and_os_numpy(full_bundle, tmp_path, capsys):
    ob = make_offline_bundle(str(full_bundle), get_profile("rpi-32bit-trixie"), str(tmp_path / "t.tar.gz"))
    assert "leaving out onnx-int8" in capsys.readouterr().out
    names = archive_summary(ob.path)
    top = next(iter(names)).split("/")[0]
    wheels = sorted(n.rsplit("/", 1)[-1] for n in names if n.endswith(".whl"))
    # pure-Python wheels only (armv7 has no compiled wheels): the numpy backend's tflite schema and flatbuffers,
    # and the service's wheels; numpy and Pillow come from the OS
    assert all(w.endswith("-none-any.whl") for w in wheels), wheels
    assert {"flatbuffers-25.12.19-py2.py3-none-any.whl", "tflite-2.18.0-py2.py3-none-any.whl"} <= set(wheels)
    assert not [w for w in wheels if w.split("-")[0].lower() in ("numpy", "pillow")], wheels
    with tarfile.open(ob.path) as t:
        man = json.loads(t.extractfile(f"{top}/bundle/manifest.json").read())
        env = t.extractfile(f"{top}/device.env").read().decode()
    # the numpy backend runs dynamic-range models too (tflite-runtime 2.14 cannot): every .tflite artifact goes
    assert {a["name"] for a in man["artifacts"]} == {a["name"] for a in json.loads(
        (full_bundle / "manifest.json").read_text())["artifacts"] if a["format"] == "tflite"}
    assert "tflite-dynamic" in {a["name"] for a in man["artifacts"]}
    _assert_serve_wheels(names, env)
    for line in ("SYSTEM_NUMPY=1", "EXTRAS=numpy,image,serve", "PYTHON_VERSION=3.13", "OS_CODENAME=trixie",
                 "OS_RELEASE='debian-13 trixie'", "OS_PACKAGES='python3-numpy python3-pil'"):
        assert line in env.splitlines(), (line, env)


def test_offline_bundle_for_64bit_trixie_has_cp313_aarch64_wheels(full_bundle, tmp_path):
    ob = make_offline_bundle(str(full_bundle), get_profile("rpi5-trixie"), str(tmp_path / "t5.tar.gz"))
    wheels = [n.rsplit("/", 1)[-1] for n in archive_summary(ob.path) if n.endswith(".whl")]
    for pin in ("numpy-2.4.6-cp313-cp313-", "ai_edge_litert-2.3.0-cp313-cp313-", "onnxruntime-1.31.1-cp313-cp313-",
                "pillow-13.0.0-cp313-cp313-"):
        assert any(w.startswith(pin) and w.endswith("aarch64.whl") for w in wheels), (pin, wheels)
    # compiled wheels of other Pythons or architectures would not install on the device
    assert not any(("-cp3" in w and "-cp313-" not in w and "abi3" not in w) or "x86_64" in w for w in wheels), wheels


def test_offline_bundle_for_rpi4_has_aarch64_wheels(full_bundle, tmp_path):
    ob = make_offline_bundle(str(full_bundle), get_profile("rpi4"), str(tmp_path / "b.tar.gz"))
    wheels = [n.rsplit("/", 1)[-1] for n in archive_summary(ob.path) if n.endswith(".whl")]
    assert any(w.startswith("ai_edge_litert-2.3.0") and "aarch64" in w for w in wheels)
    assert any(w.startswith("numpy-2.4.6") and "aarch64" in w for w in wheels)
    assert any(w.startswith("onnxruntime-1.31.1") and "aarch64" in w for w in wheels)
    assert not any("x86_64" in w for w in wheels)
    top = next(iter(archive_summary(ob.path))).split("/")[0]
    with tarfile.open(ob.path) as t:
        _assert_serve_wheels(archive_summary(ob.path), t.extractfile(f"{top}/device.env").read().decode())
    with pytest.raises(UsageError, match="--force"):
        make_offline_bundle(str(full_bundle), get_profile("rpi4"), str(tmp_path / "b.tar.gz"))


def test_profile_arch_tags_mismatch_rejected(tmp_path):
    src = (PROFILE_DIR / "rpi4.toml").read_text().replace('"manylinux2014_aarch64"', '"manylinux2014_x86_64"')
    (tmp_path / "mine.toml").write_text(src)
    with pytest.raises(UsageError, match=r"manylinux2014_x86_64.*not for arch 'aarch64'"):
        get_profile(str(tmp_path / "mine.toml"))


@pytest.mark.parametrize("line, match", [
    ('cores = "2; touch X; echo"', r"cores = '2; touch X; echo' is not valid; expected an integer from 1 to"),
    ("cores = true", r"cores = True is not valid"),
    ("ram_mb = 0", r"ram_mb = 0 is not valid; expected an integer from 64"),
    ('arch = "armv8"', r"arch = 'armv8' is not valid; expected one of aarch64, armv7l, x86_64"),
    ('backend = "tensorflow"', r"backend = 'tensorflow' is not valid; expected one of litert"),
    ('python = "3.11; rm -rf /"', r"python = .* expected MAJOR.MINOR"),
    ('name = "rpi4 $(reboot)"', r"name = .* is not valid"),
    ('pip_platforms = ["any"]', r"pip_platforms = \['any'\] is not valid"),
    ('qemu_cpu = "max -d"', r"qemu_cpu = .* is not valid"),
    ('os = "Raspberry Pi OS bookworm"', r"os = .* expected an OS release as ID-VERSION CODENAME"),
    ('os = "debian-13 trixie; reboot"', r"os = .* is not valid"),
    ('system_numpy = "no"', r"system_numpy = 'no' is not valid; expected true or false"),
    ('os_packages = ["python3-pil; reboot"]', r"os_packages = .* expected a list of OS packages"),
])
def test_profile_bad_value_rejected(tmp_path, line, match):
    key = line.split(" = ")[0]
    src = "\n".join(ln for ln in (PROFILE_DIR / "rpi4.toml").read_text().splitlines() if not ln.startswith(key + " "))
    (tmp_path / "mine.toml").write_text(line + "\n" + src)
    with pytest.raises(UsageError, match=match):
        get_profile(str(tmp_path / "mine.toml"))


@pytest.mark.parametrize("wheel_line, match", [
    ('numpy = ">=2.0"', r'exact version like "2.4.6" for numpy'),
    ('numpy = "2.4.6 --index-url http://evil"', r"exact version"),
    ('"numpy;touch" = "2.4.6"', r"wheel names in lower case"),
])
def test_profile_bad_wheel_rejected(tmp_path, wheel_line, match):
    src = (PROFILE_DIR / "rpi4.toml").read_text().replace('numpy = "2.4.6"', wheel_line)
    (tmp_path / "mine.toml").write_text(src)
    with pytest.raises(UsageError, match=match):
        get_profile(str(tmp_path / "mine.toml"))


def test_profile_misspelt_key_gets_closest_hint(tmp_path):
    src = (PROFILE_DIR / "rpi4.toml").read_text().replace("ram_mb =", "ram_mbs =")
    (tmp_path / "mine.toml").write_text(src)
    with pytest.raises(UsageError, match=r"unknown key 'ram_mbs'.*ram_mb"):
        get_profile(str(tmp_path / "mine.toml"))


def test_profiles_with_pillow_wheels_or_os_package():
    """Every profile can read images offline: a pinned Pillow wheel, or the OS's python3-pil on armv7."""
    for p in load_profiles().values():
        assert "image" in p.extras, p.name
        assert ("pillow" in p.wheels) != ("python3-pil" in p.os_packages), p.name
    assert get_profile("rpi-32bit").os_packages == ["python3-numpy", "python3-pil"]


def _crafted_copy(full_bundle, tmp_path, edit):
    bad = tmp_path / "bad"
    shutil.copytree(full_bundle, bad, ignore=shutil.ignore_patterns("devices"))
    man = json.loads((bad / "manifest.json").read_text())
    edit(man, bad)
    (bad / "manifest.json").write_text(json.dumps(man))
    return bad


def test_bundle_manifest_path_escape_refused(full_bundle, tmp_path, cli):
    victim = tmp_path / "outside" / "victim.txt"
    victim.parent.mkdir()
    victim.write_text("secret")

    def escape(man, bad):  # a path climbing out of the bundle to a file of the attacker's choosing
        man["artifacts"][0]["path"] = os.path.relpath(victim, bad)
    bad = _crafted_copy(full_bundle, tmp_path, escape)
    code, _, err = cli("bundle", bad, "--device", "x86_64", "--out", tmp_path / "a.tar.gz")
    assert code == 2 and "contains '..'" in err and not (tmp_path / "a.tar.gz").exists()

    def absolute(man, bad):
        man["check"]["inputs"] = str(victim)
    bad = _crafted_copy(full_bundle, tmp_path / "abs", absolute)
    with pytest.raises(IntegrityError, match="is absolute"):
        make_offline_bundle(str(bad), get_profile("x86_64"), str(tmp_path / "b.tar.gz"))
    assert not (tmp_path / "b.tar.gz").exists() and victim.read_text() == "secret"


def test_bundle_symlink_out_of_bundle_refused(full_bundle, tmp_path):
    secret = tmp_path / "secret.npy"
    secret.write_bytes(b"not yours")

    def link(man, bad):  # an in-bundle name that is a symlink to a file outside
        (bad / man["check"]["inputs"]).unlink()
        (bad / man["check"]["inputs"]).symlink_to(secret)
    bad = _crafted_copy(full_bundle, tmp_path, link)
    with pytest.raises(IntegrityError, match="outside"):
        make_offline_bundle(str(bad), get_profile("x86_64"), str(tmp_path / "c.tar.gz"))


def test_bundle_out_inside_input_refused(full_bundle, tmp_path, cli):
    src = tmp_path / "b"
    shutil.copytree(full_bundle, src, ignore=shutil.ignore_patterns("devices"))
    before = (src / "manifest.json").read_bytes()
    for out in (src / "manifest.json", src, src / "sub.tar.gz"):
        code, _, err = cli("bundle", src, "--device", "x86_64", "--out", out, "--force")
        assert code == 2 and "inside the input bundle" in err, out
    assert (src / "manifest.json").read_bytes() == before and not (src / "sub.tar.gz").exists()


@pytest.fixture(scope="module")
def rpi4_archive(full_bundle, tmp_path_factory):
    return make_offline_bundle(str(full_bundle), get_profile("rpi4"), str(tmp_path_factory.mktemp("a") / "r.tar.gz"))


@pytest.fixture(scope="module")
def x86_archive(full_bundle, tmp_path_factory):
    return make_offline_bundle(str(full_bundle), get_profile("x86_64"), str(tmp_path_factory.mktemp("x") / "x.tar.gz"))


def _extract(archive, dest):
    with tarfile.open(archive) as t:
        t.extractall(dest, filter="data")
    return next(dest.iterdir())


def _install(top, venv):
    return subprocess.run(["sh", str(top / "install.sh"), str(venv)], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON="python3.11"))


def test_install_on_wrong_arch_refused_and_leaves_nothing(rpi4_archive, tmp_path):
    top = _extract(rpi4_archive.path, tmp_path / "x")
    before = sorted(p.name for p in tmp_path.iterdir())
    out = _install(top, tmp_path / "venv")
    assert out.returncode == 2
    assert "this archive is for rpi4 (aarch64) but this machine runs x86_64" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no venv, no half-made one


def test_install_on_wrong_python_refused(x86_archive, tmp_path):
    top = _extract(x86_archive.path, tmp_path / "x")
    env = (top / "device.env").read_text().replace("PYTHON_VERSION=3.11", "PYTHON_VERSION=3.9")
    (top / "device.env").write_text(env)
    out = _install(top, tmp_path / "venv")
    assert out.returncode == 2 and "wheels are for Python 3.9 but python3.11 is Python 3.11" in out.stderr
    assert not (tmp_path / "venv").exists()


def test_install_on_other_os_release_warns(x86_archive, tmp_path):
    top = _extract(x86_archive.path, tmp_path / "x")
    host = subprocess.run(["sh", "-c", ". /etc/os-release && echo $VERSION_CODENAME"], capture_output=True,
                          text=True).stdout.strip()
    other = "trixie" if host != "trixie" else "bookworm"
    env = (top / "device.env").read_text()
    (top / "device.env").write_text(env.replace("OS_CODENAME=''", f"OS_CODENAME={other}")
                                    .replace("OS_RELEASE=any", f"OS_RELEASE='debian-0 {other}'"))
    (tmp_path / "venv").mkdir()  # stops install.sh right after its checks (no venv needed to see the warning)
    out = _install(top, tmp_path / "venv")
    assert f"warning: this archive was made for x86_64 (debian-0 {other}) but this machine runs {host}" in out.stderr
    assert out.returncode == 2 and "already exists" in out.stderr


def test_install_failing_pip_leaves_nothing(x86_archive, tmp_path):
    top = _extract(x86_archive.path, tmp_path / "x")
    for whl in (top / "wheels").glob("ai_edge_litert-*.whl"):
        whl.unlink()  # pip cannot satisfy edgeport-runtime[litert] offline
    out = _install(top, tmp_path / "venv")
    assert out.returncode != 0 and "ai-edge-litert" in out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x"]


def test_install_builds_working_venv_at_its_final_path(x86_archive, tmp_path):
    top = _extract(x86_archive.path, tmp_path / "x")
    out = _install(top, tmp_path / "venv")
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["venv", "x"]
    assert "warning" not in out.stderr  # the x86_64 profile runs on any OS release
    # the console script written in the temp dir now points at the final venv's Python
    assert (tmp_path / "venv/bin/edgeport-run").read_text().splitlines()[0].startswith(f"#!{tmp_path}/venv/bin/python")
    run = subprocess.run([str(tmp_path / "venv/bin/edgeport-run"), "info", str(top / "bundle"), "--json"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    again = _install(top, tmp_path / "venv")
    assert again.returncode == 2 and "already exists" in again.stderr


def test_runtime_wheel_built_once_outside_the_source_tree(tmp_path, monkeypatch):
    """The wheel is built from a copy of runtime/ into the cache: the source tree gets no build/ or egg-info."""
    import shutil
    import zipfile
    from pathlib import Path

    from edgeport.devices import wheelhouse

    root = tmp_path / "src"
    shutil.copytree(Path(wheelhouse.ROOT) / "runtime", root / "runtime",
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__", "tests"))
    monkeypatch.setattr(wheelhouse, "ROOT", root)
    monkeypatch.setenv("EDGEPORT_CACHE", str(tmp_path / "cache"))
    first = wheelhouse.runtime_wheel(tmp_path / "a")
    assert first.parent == tmp_path / "a" and "edgeport_runtime/model.py" in zipfile.ZipFile(first).namelist()
    assert sorted(p.name for p in (root / "runtime").iterdir()) == ["edgeport_runtime", "pyproject.toml"]
    cached = list((tmp_path / "cache" / "runtime-wheels").glob("*/*.whl"))
    assert len(cached) == 1
    mtime = cached[0].stat().st_mtime_ns
    wheelhouse.runtime_wheel(tmp_path / "b")  # same sources: no rebuild
    assert cached[0].stat().st_mtime_ns == mtime and (tmp_path / "b" / first.name).is_file()
    (root / "runtime" / "edgeport_runtime" / "extra_module.py").write_text("X = 1\n")  # sources changed: rebuilt
    wheelhouse.runtime_wheel(tmp_path / "c")
    assert len(list((tmp_path / "cache" / "runtime-wheels").glob("*/*.whl"))) == 2
