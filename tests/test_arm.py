"""Emulated ARM (make test-arm): offline bundles installed and checked inside arm64 and armhf Debian chroots.

qemu-user runs each bundle's check inputs with pinned CPU models and edgeport-runtime's smoke check compares
them with the outputs the x86 toolkit stored. What is asserted here (and what the README claims):
- arm64 (ai-edge-litert, onnxruntime): artifacts with int8 outputs bit-identical (0 output steps); float outputs
  (including onnx-int8, whose QDQ graph ends in float) within 1e-5 -- the smoke check's own tolerances.
- armhf (tflite-runtime): int8 outputs within 4 output steps, float within 1e-5 (edgeport_runtime/smoke.py says
  why 4).
Then the README's device example: a PNG of a test digit through `edgeport-run predict` inside the chroot gives
the class the x86 runtime gives. Each run prints the measured differences (pytest -s shows them).
Needs root; if emulation cannot be set up the tests fail loudly, they never skip.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeport.devices import emulate
from edgeport.devices.offline import make_offline_bundle
from edgeport.devices.profiles import get_profile

pytestmark = pytest.mark.arm

CASES = [  # profile, Debian architecture, emulated CPUs (pinned: qemu's default `max` CPU breaks LiteRT int8)
    ("rpi4", "arm64", ["cortex-a72", "cortex-a76", "cortex-a53"]),
    ("rpi-32bit", "armhf", ["cortex-a7"]),
]
ARTIFACT = "tflite-int8"  # the README example's model: the default artifact of both archives


@pytest.fixture(scope="module", autouse=True)
def host_tools():
    emulate.ensure_host_tools()


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


@pytest.mark.parametrize("profile, arch, cpus", CASES, ids=[c[0] for c in CASES])
def test_offline_bundle_matches_x86_under_emulation(full_bundle, tmp_path, profile, arch, cpus):
    prof = get_profile(profile)
    ob = make_offline_bundle(str(full_bundle), prof, str(tmp_path / "device.tar.gz"))
    png = _digit_png(full_bundle, tmp_path / "digit.png")
    # the oracle: the x86 runtime (outside any emulation) on the same PNG
    x86 = subprocess.run([str(Path(sys.executable).parent / "edgeport-run"), "predict", str(full_bundle),
                          "--artifact", ARTIFACT, "--input", str(png), "--json"], capture_output=True, text=True)
    assert x86.returncode == 0, x86.stderr
    want = _top_class(x86.stdout)
    with emulate.chroot(arch) as root:
        shutil.copy2(ob.path, root / "opt" / "device.tar.gz")
        shutil.copy2(png, root / "opt" / "digit.png")
        machine = emulate.run(root, "uname -m", cpus[0]).strip()
        assert machine == prof.arch, f"the chroot runs as {machine}, not {prof.arch}"
        # the device install is offline: pip may only use the archive's wheels (and the OS's packages on armhf)
        emulate.run(root, "cd /opt && tar -xzf device.tar.gz && sh /opt/edgeport-*/install.sh /opt/venv", cpus[0])
        for cpu in cpus:
            out = emulate.run(root, "/opt/venv/bin/python -m edgeport_runtime.smoke /opt/edgeport-*/bundle --json",
                              cpu)
            res = json.loads(out)
            ran = [a for a in res["artifacts"] if "passed" in a]
            for a in ran:
                print(f"{profile} {cpu} {a['artifact']} [{a['backend']}]: max_abs_diff {a['max_abs_diff']:.3g}"
                      + (f", {a['max_steps']} output steps" if "max_steps" in a else ""))
            assert {a["artifact"] for a in ran} == set(ob.artifacts), res
            assert res["passed"], json.dumps(res, indent=1)
            backends = {a["backend"] for a in ran}
            assert backends == ({"litert", "onnxruntime"} if arch == "arm64" else {"tflite-runtime"})
            if arch == "arm64":  # integer kernels: bit-identical to x86
                assert all(a["max_steps"] == 0 for a in ran if "max_steps" in a), res
            # the README's example, run where the device would run it
            pred = emulate.run(root, "/opt/venv/bin/edgeport-run predict /opt/edgeport-*/bundle --artifact "
                               f"{ARTIFACT} --input /opt/digit.png --json", cpu)
            assert _top_class(pred) == want, pred
