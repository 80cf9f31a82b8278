"""Load test of `edgeport-run serve` on localhost vs calling Model.predict in one process.

Usage: python benchmarks/bench_serve.py [BUNDLE] [--seconds 5] [--clients 1,8,32] [--samples 1] [--body json|npy]
       (default BUNDLE: runs/digits-tiny_cnn/bundle from `make`; any Python with edgeport-runtime[serve])

The served side: the service runs in its own process (`edgeport-run serve BUNDLE --port 0`); N clients in this
process, each on its own keep-alive HTTP/1.1 connection, POST JSON requests of --samples samples back to back
for --seconds. The in-process side: one loop calling `model.predict` on the same samples, same artifact and
threads. Prints requests/s, samples/s, p50/p99 latency per level, served/in-process throughput at each, and
the CPU time spent per request (the serving process, all its threads; read from /proc) or per in-process call.
Every number comes from this run on this machine (the load average is printed: other work on the machine
lowers both sides).
"""
import argparse
import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import edgeport_runtime as er
from edgeport_runtime.bench import sample_input

DEFAULT_BUNDLE = Path("runs/digits-tiny_cnn/bundle")
WARMUP_S = 1.0


def in_process(bundle, artifact, threads, x, seconds):
    """Model.predict called back to back in this process: calls/s, per-call latency, CPU seconds per call."""
    with er.load(bundle, artifact=artifact, num_threads=threads) as m:
        for _ in range(200):
            m.predict(x)
        lat = []
        c0 = time.process_time()  # all threads of this process (the interpreter's own threads too)
        end = time.perf_counter() + seconds
        while True:
            t0 = time.perf_counter()
            m.predict(x)
            t1 = time.perf_counter()
            lat.append(t1 - t0)
            if t1 > end:
                break
        cpu = (time.process_time() - c0) / len(lat)
        return len(lat) / sum(lat), np.asarray(lat), cpu, m.info


def _request(x: np.ndarray, body_format: str = "json") -> bytes:
    if body_format == "npy":
        buf = io.BytesIO()
        np.save(buf, x)
        body, ctype = buf.getvalue(), b"application/x-npy\r\nAccept: application/x-npy"  # arrays both ways
    else:
        body, ctype = json.dumps({"inputs": x.tolist()}).encode(), b"application/json"
    return (b"POST /predict HTTP/1.1\r\nHost: localhost\r\nContent-Type: " + ctype + b"\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def _client(host, port, req, t_start, t_end, lat, errors):
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            t0 = time.perf_counter()
            if t0 > t_end:
                return
            writer.write(req)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            t1 = time.perf_counter()
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
            if t0 >= t_start:  # requests that started during the warm-up are not counted
                lat.append(t1 - t0)
    finally:
        writer.close()


def cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads (from /proc: Linux only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _cpu_window(pid, t_start, t_end, out):
    await asyncio.sleep(max(0.0, t_start - time.perf_counter()))
    c0 = cpu_seconds(pid)
    await asyncio.sleep(max(0.0, t_end - time.perf_counter()))
    out.append(cpu_seconds(pid) - c0)


async def load_level(host, port, req, clients, seconds, pid):
    """(requests/s, latencies, server CPU seconds per request) over ``seconds`` after a warm-up."""
    lat, errors, cpu = [], [], []
    now = time.perf_counter()
    t_start, t_end = now + WARMUP_S, now + WARMUP_S + seconds
    await asyncio.gather(_cpu_window(pid, t_start, t_end, cpu),
                         *(_client(host, port, req, t_start, t_end, lat, errors) for _ in range(clients)))
    if errors:
        raise SystemExit(f"bench_serve: {len(errors)} requests failed, e.g. {errors[0]}")
    return len(lat) / seconds, np.asarray(lat), cpu[0] / max(len(lat), 1)


def start_server(bundle, artifact, threads):
    args = [sys.executable, "-m", "edgeport_runtime.cli", "serve", str(bundle), "--port", "0"]
    if artifact:
        args += ["--artifact", artifact]
    if threads:
        args += ["--threads", str(threads)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on http://"):
        proc.kill()
        raise SystemExit(f"bench_serve: the service did not start ({line!r}); see its error above")
    host, port = line.rsplit("/", 1)[1].rsplit(":", 1)
    return proc, host, int(port)


def _ms(a, q):
    return float(np.percentile(a, q)) * 1000


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bundle", nargs="?", default=str(DEFAULT_BUNDLE))
    p.add_argument("--seconds", type=float, default=5.0, help="measured seconds per level (default 5)")
    p.add_argument("--clients", default="1,8,32", help="concurrent clients per level (default 1,8,32)")
    p.add_argument("--samples", type=int, default=1, help="samples per request (default 1)")
    p.add_argument("--body", choices=["json", "npy"], default="json",
                   help="request and response body format (default json; npy: .npy in, .npy out)")
    p.add_argument("--artifact", help="artifact to serve (default: the bundle's default)")
    p.add_argument("--threads", type=int, help="interpreter threads, both sides (default: all cores)")
    args = p.parse_args()
    if not (Path(args.bundle) / "manifest.json").is_file() and not Path(args.bundle).is_file():
        raise SystemExit(f"bench_serve: no bundle at {args.bundle}; run `make` first or pass a bundle path.")
    levels = [int(c) for c in args.clients.split(",")]

    with er.load(args.bundle, artifact=args.artifact, num_threads=args.threads) as m:
        x = sample_input(m, args.samples)
    base_rate, base_lat, base_cpu, info = in_process(args.bundle, args.artifact, args.threads, x, args.seconds)
    req = _request(x, args.body)
    print(f"bundle {args.bundle}: artifact {info.get('artifact')}, backend {info['backend']}, "
          f"{info['threads']} threads; {args.samples} sample(s) per request as {args.body} ({len(req):,} bytes of "
          f"HTTP); {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    print(f"{'':<28}{'req/s':>9}{'samples/s':>11}{'p50 ms':>9}{'p99 ms':>9}{'vs in-process':>15}"
          f"{'CPU ms/req':>12}")
    print(f"{'in-process Model.predict':<28}{base_rate:>9,.0f}{base_rate * args.samples:>11,.0f}"
          f"{_ms(base_lat, 50):>9.3f}{_ms(base_lat, 99):>9.3f}{'100%':>15}{base_cpu * 1000:>12.3f}")
    proc, host, port = start_server(args.bundle, args.artifact, args.threads)
    try:
        for n in levels:
            rate, lat, cpu = asyncio.run(load_level(host, port, req, n, args.seconds, proc.pid))
            print(f"{f'served, {n} client(s)':<28}{rate:>9,.0f}{rate * args.samples:>11,.0f}"
                  f"{_ms(lat, 50):>9.3f}{_ms(lat, 99):>9.3f}{rate / base_rate:>15.1%}{cpu * 1000:>12.3f}", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.1f}. CPU ms/req: CPU time of the serving process (all "
              "threads) per request; in-process: of this process per call.")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

if __name__ == "__main__":
    main()
