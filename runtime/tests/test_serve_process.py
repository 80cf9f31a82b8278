"""edgeport-run serve as a real process (Uvicorn on a free port): the address line, health, signals, start errors,
a release directory, micro-batching of concurrent requests, and /health failing when the model is not the one the
bundle recorded."""
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from edgeport_runtime.model import load
from edgeport_runtime.serve.batcher import MicroBatcher

START_TIMEOUT = 60  # seconds: import + model load + bind take ~1 s idle; the CI machine may be heavily shared


class Server:
    """A running `edgeport-run serve ... --port 0`; stopped with SIGTERM at the end of the test."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "-m", "edgeport_runtime.cli", "serve", *map(str, args),
                                      "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self._first_line()
        assert line.startswith("listening on http://127.0.0.1:"), line
        self.url = line.split()[-1]

    def _first_line(self):
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.proc.stderr.read()}")
            line = self.proc.stdout.readline()
            if line:
                return line.strip()
        raise AssertionError("serve printed no address line in time")

    def get(self, path, **kw):
        return _call(self.url + path, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


def _call(url, data=None, headers=None):
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.fixture
def start():
    servers = []

    def _start(*args):
        s = Server(*args)
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


def test_serve_prints_address_answers_health_and_stops_on_sigterm(bundle, start):
    s = start(bundle)
    status, body = s.get("/health")
    assert status == 200 and body["status"] == "ok"
    assert s.stop() == 0


def test_health_fails_when_recorded_outputs_do_not_match_the_model(bundle, start):
    # a bundle whose int8 model was swapped for another one: the check outputs recorded at conversion time
    # (here: the fp32 artifact's, a different model) no longer come out of it
    man = json.loads((bundle / "manifest.json").read_text())
    art = next(a for a in man["artifacts"] if a["name"] == "tflite-int8")
    want = np.load(bundle / art["check_outputs"])
    np.save(bundle / art["check_outputs"], np.roll(want, 1, axis=1))
    s = start(bundle)
    status, body = s.get("/health")
    assert status == 503 and body["status"] == "failing" and "not the one converted" in body["reason"]


def test_health_fails_when_the_artifact_changes_on_disk(bundle, start):
    s = start(bundle)
    assert s.get("/health")[0] == 200
    model = bundle / "tflite-int8.tflite"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF  # corrupted in place after the service loaded it
    model.write_bytes(bytes(data))
    status, body = s.get("/health")
    assert status == 503 and "changed on disk" in body["reason"]
    shutil.copy(bundle / "tflite-fp32.tflite", model)  # swapped for another model file
    status, body = s.get("/health")
    assert status == 503 and "changed on disk" in body["reason"]


def test_release_directory_serves_its_bundle(bundle, tmp_path, start):
    release = tmp_path / "release"  # what a deploy leaves on the device: bundle/ beside venv/ and the reports
    (release / "venv" / "bin").mkdir(parents=True)
    shutil.copytree(bundle, release / "bundle")
    (release / "smoke.json").write_text("{}")
    s = start(release, "--artifact", "onnx-fp32", "--threads", "1")
    status, body = s.get("/health")
    assert status == 200 and (body["artifact"], body["backend"], body["threads"]) == ("onnx-fp32", "onnxruntime", 1)


@pytest.mark.parametrize("setup, words", [
    ("missing", "no such file or directory"),
    ("corrupt", "sha256"),
    ("token-empty", "--token-file"),
])
def test_serve_start_errors_are_one_line_exit_2(bundle, tmp_path, setup, words):
    args = [bundle]
    if setup == "missing":
        args = [tmp_path / "nope"]
    elif setup == "corrupt":
        (bundle / "tflite-int8.tflite").write_bytes(b"TFL3" + b"\0" * 100)
    elif setup == "token-empty":
        (tmp_path / "token").write_text("\n")
        args += ["--token-file", tmp_path / "token"]
    out = subprocess.run([sys.executable, "-m", "edgeport_runtime.cli", "serve", *map(str, args), "--port", "0"],
                         capture_output=True, text=True, timeout=START_TIMEOUT)
    assert out.returncode == 2 and out.stdout == "", out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], out.stderr


def test_serve_refuses_a_port_in_use(bundle, start):
    s = start(bundle)
    port = s.url.rsplit(":", 1)[1]
    out = subprocess.run([sys.executable, "-m", "edgeport_runtime.cli", "serve", str(bundle), "--port", port],
                         capture_output=True, text=True, timeout=START_TIMEOUT)
    assert out.returncode == 2 and "already in use" in out.stderr


def test_concurrent_requests_share_interpreter_calls(bundle):
    x = np.load(bundle / "check_inputs.npy")
    want = np.load(bundle / "oracle_tflite-int8.npy")
    batches = []
    with load(bundle) as model:
        batcher = MicroBatcher(model.predict, max_batch=5, on_batch=lambda n, s: batches.append(n))

        async def main():
            return await asyncio.gather(*(batcher.submit(x[i:i + 1]) for i in range(len(x))))

        results = asyncio.run(main())
        batcher.close()
    for i, (y, detail) in enumerate(results):
        np.testing.assert_array_equal(y, want[i:i + 1])
    # all 8 requests arrive in one event-loop turn: two calls (5 + 3 samples, --max-batch 5), not eight
    assert batches == [5, 3]
    assert [d["batch"] for _, d in results] == [5] * 5 + [3] * 3



def test_slow_model_calls_move_off_the_event_loop():
    threads = []

    def slow_predict(x):  # burns ~5 ms of CPU per call: more than the 2 ms a call may take on the event loop
        threads.append(threading.current_thread().name)
        end = time.thread_time() + 0.005
        while time.thread_time() < end:
            pass
        return x * 2

    batcher = MicroBatcher(slow_predict)

    async def main():
        for i in range(3):
            y, _ = await batcher.submit(np.full((1, 2), i, np.float32))
            np.testing.assert_array_equal(y, np.full((1, 2), 2 * i, np.float32))

    asyncio.run(main())
    batcher.close()
    # the first call runs inline (nothing measured yet); once it is known to be slow, the worker thread takes over
    assert threads[0] == "MainThread" and all(t.startswith("edgeport-infer") for t in threads[1:]), threads
