"""Emulated ARM (make test-arm): offline bundles installed and checked inside arm64 and armhf Debian chroots.

qemu-user runs each bundle's check inputs with pinned CPU models and edgeport-runtime's smoke check compares
them with the outputs the x86 toolkit stored: int8 bit-identical for ai-edge-litert and onnxruntime, float within
1e-5, tflite-runtime int8 within 4 output steps (tolerances in edgeport_runtime/smoke.py, with the reasons).
Needs root; if emulation cannot be set up the tests fail loudly, they never skip.
"""
import json
import shutil

import pytest

from edgeport.devices import emulate
from edgeport.devices.offline import make_offline_bundle
from edgeport.devices.profiles import get_profile

pytestmark = pytest.mark.arm

CASES = [  # profile, Debian architecture, emulated CPUs (STACK.md: pin the CPU, never qemu's default `max`)
    ("rpi4", "arm64", ["cortex-a72", "cortex-a76"]),
    ("rpi-32bit", "armhf", ["cortex-a7"]),
]


@pytest.fixture(scope="module", autouse=True)
def host_tools():
    emulate.ensure_host_tools()


@pytest.mark.parametrize("profile, arch, cpus", CASES, ids=[c[0] for c in CASES])
def test_offline_bundle_matches_x86_under_emulation(full_bundle, tmp_path, profile, arch, cpus):
    prof = get_profile(profile)
    ob = make_offline_bundle(str(full_bundle), prof, str(tmp_path / "device.tar.gz"))
    with emulate.chroot(arch) as root:
        shutil.copy2(ob.path, root / "opt" / "device.tar.gz")
        machine = emulate.run(root, "uname -m", cpus[0]).strip()
        assert machine == prof.arch, f"the chroot runs as {machine}, not {prof.arch}"
        # the device install is offline: pip may only use the archive's wheels
        emulate.run(root, "cd /opt && tar -xzf device.tar.gz && sh /opt/edgeport-*/install.sh /opt/venv", cpus[0])
        for cpu in cpus:
            out = emulate.run(root, "/opt/venv/bin/python -m edgeport_runtime.smoke /opt/edgeport-*/bundle --json",
                              cpu)
            res = json.loads(out)
            ran = [a for a in res["artifacts"] if "passed" in a]
            assert {a["artifact"] for a in ran} == set(ob.artifacts), res
            assert res["passed"], json.dumps(res, indent=1)
            backends = {a["backend"] for a in ran}
            assert backends == ({"litert", "onnxruntime"} if arch == "arm64" else {"tflite-runtime"})
            if arch == "arm64":  # integer kernels: bit-identical to x86
                assert all(a["max_steps"] == 0 for a in ran if "max_steps" in a), res
