"""Emulated ARM (make test-arm): offline bundles installed and checked inside arm64 and armhf Debian chroots.

qemu-user runs each bundle's check inputs with pinned CPU models and edgeport-runtime's smoke check compares
them with the outputs the x86 toolkit stored -- which are x86 ai-edge-litert's (asserted below, so the armhf numpy
backend is compared with LiteRT, never with its own earlier output). What is asserted here (and the README claims):
- arm64 bookworm (rpi4) and trixie (rpi5-trixie, Python 3.13) with ai-edge-litert and onnxruntime: artifacts with
  int8 outputs bit-identical (0 output steps); float outputs (including onnx-int8, whose QDQ graph ends in float)
  within 1e-5 -- the smoke check's own tolerances.
- armhf bookworm (rpi-32bit, tflite-runtime): int8 outputs within 4 output steps, float within 1e-5
  (edgeport_runtime/smoke.py says why 4).
- armhf trixie (rpi-32bit-trixie: Python 3.13, the OS's numpy and Pillow, the numpy backend): int8 outputs
  bit-identical to x86 LiteRT, float within 1e-5.
- inside the arm64 chroot, the numpy backend against LiteRT on the same 64 inputs: its int8 outputs bit-identical
  to x86 LiteRT's and within 1 step of arm64 LiteRT's on at most 1% of outputs (arm64 LiteRT rounds a rare tie
  differently from x86 LiteRT: measured, see the test), float within 1e-5 of arm64 LiteRT.
Then the README's device example: a PNG of a test digit through `edgeport-run predict` inside the chroot gives
the class the x86 runtime gives. Each run prints the measured differences (pytest -s shows them).
Needs root; if emulation cannot be set up the tests fail loudly, they never skip.
"""
import contextlib
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import edgeport_runtime as er
from edgeport.devices import emulate
from edgeport.devices.offline import OfflineBundle, make_offline_bundle
from edgeport.devices.profiles import Profile, get_profile
from edgeport.devices.wheelhouse import wheelhouse

pytestmark = pytest.mark.arm

CASES = [  # profile, emulated CPUs (pinned: qemu's default `max` CPU breaks LiteRT int8)
    ("rpi4", ["cortex-a72", "cortex-a76", "cortex-a53"]),
    ("rpi-32bit", ["cortex-a7"]),
    ("rpi-32bit-trixie", ["cortex-a7"]),
    ("rpi5-trixie", ["cortex-a76"]),  # the 64-bit trixie profiles share their wheels: one is enough
]
DEBIAN_ARCH = {"aarch64": "arm64", "armv7l": "armhf"}
ARTIFACT = "tflite-int8"  # the README example's model: the default artifact of every archive
BIT_EXACT = {"litert", "onnxruntime", "numpy"}  # backends whose int8 outputs must equal x86 LiteRT's exactly


@pytest.fixture(scope="module", autouse=True)
def host_tools():
    emulate.ensure_host_tools()


@dataclass
class Device:
    """An emulated device: a chroot of the profile's Debian release and architecture with its archive installed."""

    profile: Profile
    root: Path
    archive: OfflineBundle


@pytest.fixture(scope="module")
def device(full_bundle, tmp_path_factory):
    """profile name -> Device, each built once per module (extracting a root filesystem and installing the
    wheels under qemu takes a while) and torn down (unmounted, removed) at the end."""
    with contextlib.ExitStack() as stack:
        made = {}

        def get(name: str) -> Device:
            if name not in made:
                prof = get_profile(name)
                tmp = tmp_path_factory.mktemp(name)
                ob = make_offline_bundle(str(full_bundle), prof, str(tmp / "device.tar.gz"))
                root = stack.enter_context(emulate.chroot(DEBIAN_ARCH[prof.arch], prof.os_codename))
                shutil.copy2(ob.path, root / "opt" / "device.tar.gz")
                machine = emulate.run(root, "uname -m", prof.qemu_cpu).strip()
                assert machine == prof.arch, f"the chroot runs as {machine}, not {prof.arch}"
                # the device install is offline: pip may only use the archive's wheels (and the OS's packages on
                # armhf, seen through --system-site-packages)
                emulate.run(root, "cd /opt && tar -xzf device.tar.gz && sh /opt/edgeport-*/install.sh /opt/venv",
                            prof.qemu_cpu)
                made[name] = Device(prof, root, ob)
            return made[name]

        yield get


def _digit_png(bundle: Path, path: Path) -> Path:
    """Check input 0 of the bundle as an 8-bit grayscale PNG (the manifest's preprocessing inverted by hand)."""
    from PIL import Image

    man = json.loads((bundle / "manifest.json").read_text())
    pre = man["preprocessing"]
    x = np.load(bundle / man["check"]["inputs"])[0, :, :, 0]
    raw = (x - pre.get("input_offset", 0.0)) / pre.get("input_scale", 1.0)
    lo, hi = pre.get("raw_range", [0, 255])
    Image.fromarray(np.clip(np.round((raw - lo) * 255.0 / (hi - lo)), 0, 255).astype(np.uint8), mode="L").save(path)
    return path


def _top_class(predict_json: str) -> int:
    return json.loads(predict_json)["results"][0]["top"][0]["class"]


def test_stored_check_outputs_equal_x86_litert(full_bundle):
    """The smoke check's reference for .tflite artifacts is what ai-edge-litert computes on x86 (this machine)."""
    man = er.read_manifest(full_bundle)
    x = np.load(full_bundle / man.check.inputs)
    tflite = [a for a in man.artifacts if a.format == "tflite"]
    assert tflite
    for art in tflite:
        with er.load(full_bundle, backend="litert", num_threads=1, artifact=art.name) as m:
            want = m.predict(x)
        assert np.array_equal(np.load(full_bundle / art.check_outputs), want), art.name


@pytest.mark.parametrize("profile, cpus", CASES, ids=[c[0] for c in CASES])
def test_offline_bundle_matches_x86_under_emulation(full_bundle, device, tmp_path, profile, cpus):
    dev = device(profile)
    png = _digit_png(full_bundle, tmp_path / "digit.png")
    shutil.copy2(png, dev.root / "opt" / "digit.png")
    # the oracle: the x86 runtime (outside any emulation, LiteRT) on the same PNG
    x86 = subprocess.run([str(Path(sys.executable).parent / "edgeport-run"), "predict", str(full_bundle),
                          "--artifact", ARTIFACT, "--input", str(png), "--json"], capture_output=True, text=True)
    assert x86.returncode == 0, x86.stderr
    want = _top_class(x86.stdout)
    for cpu in cpus:
        out = emulate.run(dev.root, "/opt/venv/bin/python -m edgeport_runtime.smoke /opt/edgeport-*/bundle --json",
                          cpu)
        res = json.loads(out)
        ran = [a for a in res["artifacts"] if "passed" in a]
        for a in ran:
            print(f"{profile} {cpu} {a['artifact']} [{a['backend']}]: max_abs_diff {a['max_abs_diff']:.3g}"
                  + (f", {a['max_steps']} output steps" if "max_steps" in a else ""))
        assert {a["artifact"] for a in ran} == set(dev.archive.artifacts), res
        assert res["passed"], json.dumps(res, indent=1)
        # the interpreters the profile's wheels provide are the ones that ran (numpy backend alone on trixie armhf)
        assert {a["backend"] for a in ran} == set(dev.profile.backends)
        # integer kernels: bit-identical to x86 LiteRT
        assert all(a["max_steps"] == 0 for a in ran if "max_steps" in a and a["backend"] in BIT_EXACT), res
        # the README's example, run where the device would run it
        pred = emulate.run(dev.root, "/opt/venv/bin/edgeport-run predict /opt/edgeport-*/bundle --artifact "
                           f"{ARTIFACT} --input /opt/digit.png --json", cpu)
        assert _top_class(pred) == want, pred


# Runs inside the chroot: every .tflite artifact through LiteRT and the numpy backend on the same raw inputs.
COMPARE = r"""
import json, sys
import numpy as np
import edgeport_runtime as er
bundle, x = sys.argv[1], np.load(sys.argv[2])
rows = {}
for art in er.read_manifest(bundle).artifacts:
    if art.format != "tflite":
        continue
    rows[art.name] = {}
    for b in ("litert", "numpy"):
        with er.load(bundle, backend=b, num_threads=1, artifact=art.name) as m:
            spec = m.inputs[0]
            xr = er.quantize(x, spec.scale, spec.zero_point, spec.dtype) if spec.quantized else x
            rows[art.name][b] = m.predict_raw(xr).tolist()
print(json.dumps(rows))
"""


def test_numpy_backend_in_arm64_chroot_matches_litert(full_bundle, device):
    dev = device("rpi4")
    # the numpy backend's wheels (tflite, flatbuffers) are pure Python: the rpi-32bit-trixie wheelhouse holds them
    # (beside the service's wheels, which this comparison does not need)
    wheels = sorted(w for w in wheelhouse(get_profile("rpi-32bit-trixie")).glob("*.whl")
                    if w.name.split("-")[0] in ("tflite", "flatbuffers"))
    assert {w.name.split("-")[0] for w in wheels} == {"tflite", "flatbuffers"}, wheels
    (dev.root / "opt" / "npwheels").mkdir(exist_ok=True)
    for w in wheels:
        shutil.copy2(w, dev.root / "opt" / "npwheels" / w.name)
    # the check inputs plus random ones over their range: more rounding cases than 8 digits give
    man = er.read_manifest(full_bundle)
    x = np.load(full_bundle / man.check.inputs)
    x = np.concatenate([x, np.random.default_rng(0).uniform(x.min(), x.max(), (56,) + x.shape[1:])
                        .astype(np.float32)])
    np.save(dev.root / "opt" / "compare_inputs.npy", x)
    (dev.root / "opt" / "compare.py").write_text(COMPARE)
    cpu = dev.profile.qemu_cpu
    emulate.run(dev.root, "/opt/venv/bin/pip install --quiet --disable-pip-version-check --no-index "
                          "--find-links /opt/npwheels tflite flatbuffers", cpu)
    rows = json.loads(emulate.run(dev.root, "/opt/venv/bin/python /opt/compare.py /opt/edgeport-*/bundle "
                                            "/opt/compare_inputs.npy", cpu))
    assert set(rows) == {a for a in dev.archive.artifacts if a.startswith("tflite")}
    for art in man.artifacts:
        if art.format != "tflite":
            continue
        with er.load(full_bundle, backend="litert", num_threads=1, artifact=art.name) as m:  # the x86 oracle
            spec, quantized = m.inputs[0], m.outputs[0].quantized
            xr = er.quantize(x, spec.scale, spec.zero_point, spec.dtype) if spec.quantized else x
            x86 = m.predict_raw(xr).astype(np.float64)
        arm_litert, arm_numpy = (np.array(rows[art.name][b], np.float64) for b in ("litert", "numpy"))
        assert arm_litert.shape == arm_numpy.shape == x86.shape, art.name
        d_litert = np.abs(arm_numpy - arm_litert)
        print(f"arm64 {cpu} {art.name}: numpy vs arm64 litert max {d_litert.max():.3g} ({int((d_litert > 0).sum())} "
              f"of {d_litert.size} differ), numpy vs x86 litert max {np.abs(arm_numpy - x86).max():.3g}")
        if quantized:
            # the numpy backend reproduces x86 LiteRT's integer arithmetic exactly, on ARM as on x86
            assert np.array_equal(arm_numpy, x86), art.name
            # LiteRT's own ARM int8 kernels round a rare tie differently from its x86 ones (measured here: 1 of
            # 640 outputs of tflite-int8-pruned one step off, while its 8 check inputs agree exactly): against
            # arm64 LiteRT the numpy backend is within 1 output step and identical on at least 99% of outputs
            assert d_litert.max() <= 1 and (d_litert > 0).mean() <= 0.01, art.name
        else:
            # float: the two sum in different orders (XNNPACK's NEON kernels vs numpy's BLAS), a rounding-level
            # difference on outputs of magnitude <= 1 (softmax probabilities); 1e-5 is the smoke check's tolerance
            assert d_litert.max() <= 1e-5, art.name
