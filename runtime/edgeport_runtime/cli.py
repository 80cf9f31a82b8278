"""`edgeport-run`: the device-side command (no TensorFlow). info | predict | bench."""
from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import List, Optional

import numpy as np

from .errors import EdgeportError, ModelLoadError
from .sections import Preprocessing


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """Parser for edgeport-run and its three subcommands."""
    p = _Parser(prog="edgeport-run", description="Run an edgeport bundle on this device (no TensorFlow). "
                "Exit codes: 0 ok, 2 bad usage or input.")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_ in (("info", "describe the bundle, the chosen backend and the model's inputs/outputs"),
                        ("predict", "run inputs through the model and print the results"),
                        ("bench", "load time, first inference, latency p50/p90/p99, throughput, peak RSS")):
        s = sub.add_parser(name, help=help_, description=help_)
        s.add_argument("bundle", help="bundle directory, bundle archive (.tar.gz/.zip), or a .tflite/.onnx file")
        s.add_argument("--artifact", help="which artifact of the bundle (default: the bundle's default)")
        s.add_argument("--backend", help="litert, tflite-runtime, onnxruntime or numpy (default: the best installed)")
        s.add_argument("--threads", type=int, help="interpreter threads (default: all cores)")
        s.add_argument("--json", action="store_true", help="print JSON")
        if name == "predict":
            s.add_argument("--input", required=True,
                           help=".npy (model-ready floats), an image (resized and scaled per the manifest) or a "
                                ".csv of raw feature rows")
            s.add_argument("--allow-nonfinite", action="store_true", help="accept NaN/Inf inputs")
            s.add_argument("--top", type=int, default=3, help="classes shown per sample (default 3)")
        if name == "bench":
            s.add_argument("--runs", type=int, default=200, help="timed batch-1 runs (default 200)")
            s.add_argument("--batch", type=int, default=32, help="batch size for throughput (default 32)")
            s.add_argument("--no-cold-start", action="store_true", help="skip the fresh-process cold start")
    return p


def _info(args) -> int:
    from .model import load

    with load(args.bundle, backend=args.backend, num_threads=args.threads, artifact=args.artifact) as m:
        info = m.info
        if m.manifest is not None:
            info["artifacts"] = [{"name": a.name, "format": a.format, "recipe": a.recipe, "bytes": a.bytes}
                                 for a in m.manifest.artifacts]
    if args.json:
        print(json.dumps(info, indent=2, default=str))
        return 0
    print(f"model    {info['path']}")
    print(f"backend  {info['backend']} ({info['threads']} threads)")
    for kind in ("inputs", "outputs"):
        for s in info[kind]:
            q = f" scale={s['scale']:.6g} zero_point={s['zero_point']}" if s["scale"] is not None else ""
            print(f"{kind[:-1]:<8} {s['name']} {['N' if d is None else d for d in s['shape']]} {s['dtype']}{q}")
    if "artifacts" in info:
        print("artifacts in the bundle:")
        for a in info["artifacts"]:
            mark = "*" if a["name"] == info.get("artifact") else " "
            print(f" {mark} {a['name']:<24} {a['format']:<7} {a['bytes']:>9,} bytes")
    if info.get("labels"):
        print(f"labels   {', '.join(info['labels'])}")
    return 0


def _predict(args) -> int:
    from .inputs import read_input
    from .model import load

    with load(args.bundle, backend=args.backend, num_threads=args.threads, artifact=args.artifact) as m:
        pre = m.manifest.preprocessing if m.manifest else Preprocessing()
        shape = [1 if d is None else d for d in m.inputs[0].shape]
        x = read_input(args.input, shape, pre)
        y = m.predict(x, allow_nonfinite=args.allow_nonfinite)
        task = m.manifest.task if m.manifest else "classification"
        labels = m.labels
    if isinstance(y, list):
        if args.json:
            print(json.dumps({"outputs": [o.tolist() for o in y]}))
            return 0
        for i, o in enumerate(y):
            print(f"output {i}: shape {list(o.shape)}")
        return 0
    if task == "autoencoder":
        if y.shape != (len(x), int(np.prod(x.shape[1:]))):
            raise ModelLoadError(f"the manifest says task 'autoencoder' but the model maps inputs "
                                 f"{list(x.shape[1:])} to outputs {list(y.shape[1:])}, not a reconstruction; the "
                                 "manifest does not belong to this model.")
        err = np.mean((y - x.reshape(len(x), -1)) ** 2, axis=1)
        rows = [{"sample": i, "reconstruction_mse": float(e)} for i, e in enumerate(err)]
    else:
        rows = []
        for i, p in enumerate(y):
            top = np.argsort(-p)[: args.top]
            rows.append({"sample": i, "top": [{"class": int(c), "label": labels[c] if c < len(labels) else str(c),
                                               "score": float(p[c])} for c in top]})
    if args.json:
        print(json.dumps({"results": rows, "outputs": y.tolist()}))
        return 0
    for r in rows:
        if "top" in r:
            print(f"sample {r['sample']}: " + ", ".join(f"{t['label']} {t['score']:.3f}" for t in r["top"]))
        else:
            print(f"sample {r['sample']}: reconstruction MSE {r['reconstruction_mse']:.6f}")
    return 0


def _bench(args) -> int:
    from .bench import bench
    from .errors import UsageError

    if args.runs < 1 or args.batch < 1:
        raise UsageError(f"--runs and --batch must be >= 1, got {args.runs} and {args.batch}.")
    r = bench(args.bundle, args.backend, args.threads, args.artifact, args.runs, args.batch,
              with_cold_start=not args.no_cold_start)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    lat = r["latency_ms"]
    print(f"artifact {r['artifact']}  backend {r['backend']}  threads {r['threads']}")
    print(f"load {r['load_s'] * 1000:.1f} ms   first inference {r['first_inference_ms']:.3f} ms")
    print(f"latency batch 1: p50 {lat['p50']:.4f} ms  p90 {lat['p90']:.4f} ms  p99 {lat['p99']:.4f} ms "
          f"({r['runs']} runs)")
    print(f"throughput batch {r['throughput_batch']}: {r['throughput_per_s']:,.0f} samples/s")
    print(f"peak RSS {r['peak_rss_mb']:.1f} MiB")
    if "cold_start_s" in r:
        print(f"cold start (new process: import, load, first result) {r['cold_start_s'] * 1000:.0f} ms, "
              f"peak RSS {r['cold_start_rss_mb']:.1f} MiB")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of edgeport-run; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        code = {"info": _info, "predict": _predict, "bench": _bench}[args.command](args)
        sys.stdout.flush()  # a closed pipe shows up here, inside the handler, not at interpreter exit
        return code
    except BrokenPipeError:  # `edgeport-run info B | head`: the reader left; nothing more to say
        _silence_stdout()
        return 0
    except EdgeportError as e:
        if args.debug:
            traceback.print_exc()
        print(f"edgeport-run {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"edgeport-run {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # last resort: known bad inputs never get here (the fuzz test checks that)
        if args.debug:
            traceback.print_exc()
        print(f"edgeport-run {args.command}: internal error: {type(e).__name__}: {_one_line(e)} (a bug in "
              "edgeport-run: re-run with --debug for the traceback and report it)", file=sys.stderr)
        return 2


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _silence_stdout() -> None:
    """Point stdout at /dev/null so Python's exit-time flush does not raise BrokenPipeError again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
