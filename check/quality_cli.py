"""CLI for parity, bench and report. Thin wrappers: reports are data, this module turns them into exit codes.

`edgeport --help` imports this module, so parity (which pulls in scipy) loads only when its command runs.
"""
from __future__ import annotations

import argparse
import json
import sys

from edgeport_runtime.errors import GateFailed, UsageError

from ..core.config import load_config
from .bench import bench
from .inspect import inspect_file
from .report import table, write_report


def parity_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport parity`."""
    p.add_argument("bundle", help="bundle directory written by `edgeport convert`")
    p.add_argument("--data", help="training run directory or dataset to evaluate on (default: the bundle's run)")
    p.add_argument("--config", help="TOML with [parity.gates.RECIPE] tables overriding max_drop_pp, "
                                    "min_agreement, max_class_drop_pp, max_abs_diff, max_mse_ratio, confidence")
    p.add_argument("--no-diagnose", action="store_true", help="skip the layer-wise diagnosis of failing int8 "
                                                              "artifacts")
    p.add_argument("--strict", action="store_true", help="also exit 1 when a gate is inconclusive (the held-out "
                                                          "split is too small to decide it either way)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


_MARK = {"pass": "\u2713", "fail": "\u2717", "inconclusive": "?"}


def _print_artifact(a) -> None:
    if a.delta_pp is not None:
        extra = (f"delta {a.delta_pp:+.2f} pp [{a.delta_low_pp:+.2f}, {a.delta_high_pp:+.2f}], "
                 f"agreement {a.agreement:.2%}")
    else:
        extra = f"Keras {a.keras_value:.5g}"
    steps = f", {a.max_diff_output_steps:.1f} output steps" if a.max_diff_output_steps is not None else ""
    print(f" {_MARK[a.outcome]} {a.name:<20} [{a.backend}] {a.metric} {a.value:.4f} ({extra}), max |diff| "
          f"{a.max_abs_diff:.2e}{steps}")
    for f in a.failures:
        print(f"     FAIL: {f}")
    for f in a.inconclusive:
        print(f"     inconclusive: {f}")
    if a.diagnosis:
        for layer in a.diagnosis["worst_layers"][:3]:
            print(f"     worst layer: {layer['tensor']} ({layer['op']}) relative error "
                  f"{layer['relative_error']:.1%}")
        for fix in a.diagnosis["suggested_fixes"]:
            print(f"     fix: {fix}")


def parity_main(args) -> int:
    """Run the gate; exit 1 listing every failing artifact and metric."""
    from .parity import parity

    gates = {}
    if args.config:
        conf = load_config(args.config, ["gates"], section="parity")
        gates = conf.get("gates", {})
    rep = parity(args.bundle, data=args.data, gate_overrides=gates, diagnose=not args.no_diagnose)
    counts = rep.counts()
    if args.json:
        print(json.dumps(rep.to_dict(), indent=2))
    else:
        k = rep.keras
        print(f"Keras {k['metric']}: {k['value']:.4f} on {rep.samples} held-out samples "
              "(deltas in pp with one-sided 95% bounds; one sample is "
              f"{100 / rep.samples:.2g} pp)")
        for a in rep.artifacts:
            _print_artifact(a)
        print(f"parity: {counts['pass']} passed, {counts['fail']} failed, {counts['inconclusive']} inconclusive")
    if not rep.passed:
        raise GateFailed(f"parity gate failed for {len(rep.failures())} artifact metric(s): "
                         + "; ".join(rep.failures()))
    if counts["inconclusive"]:
        lines = rep.inconclusive()
        print(f"warning: {len(lines)} gate(s) inconclusive: the held-out split is too small to show them either way"
              + ("" if args.strict else " (exit 0; --strict makes this exit 1)") + ". " + "; ".join(lines),
              file=sys.stderr)
        if args.strict:
            raise GateFailed(f"--strict: {len(lines)} inconclusive gate(s); evaluate on more held-out samples.")
    return 0


def bench_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport bench`."""
    p.add_argument("bundle", help="bundle directory written by `edgeport convert`")
    p.add_argument("--runs", type=int, default=300, help="timed batch-1 runs per artifact (default 300)")
    p.add_argument("--json", action="store_true", help="print JSON")


def bench_main(args) -> int:
    """Benchmark every artifact through edgeport-runtime, plus Keras for reference."""
    if args.runs < 10:
        raise UsageError(f"--runs must be >= 10 for meaningful percentiles, got {args.runs}.")
    res = bench(args.bundle, runs=args.runs)
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    print(f"{'artifact':<20} {'backend':<12} {'cold s':>7} {'RSS MiB':>8} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'p50 all':>8} {'batch32/s':>10}")
    for r in res["artifacts"]:
        print(f"{r['name']:<20} {r['backend']:<12} {r['cold_start_s']:>7.3f} {r['rss_mb']:>8.1f} "
              f"{r['latency_ms_p50']:>8.4f} {r['latency_ms_p90']:>8.4f} {r['latency_ms_p50_all_cores']:>8.4f} "
              f"{r['throughput_batch32_per_s']:>10,.0f}")
    if res["keras"]:
        k = res["keras"]
        print(f"{'keras model(x)':<20} {'tensorflow':<12} {k['cold_start_s']:>7.3f} {k['peak_rss_mb']:>8.1f} "
              f"{k['latency_ms']['p50']:>8.4f} {k['latency_ms']['p90']:>8.4f}")
    return 0


def report_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport report`."""
    p.add_argument("bundle", help="bundle directory with parity.json and bench.json")


def report_main(args) -> int:
    """Write report.md/json/png and print the table; exit 1 if any gate failed."""
    rep = write_report(args.bundle)
    print(table(rep))
    print(f"wrote {args.bundle}/report.md, report.json, report.png")
    return 0 if rep["passed"] else 1


def inspect_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport inspect`."""
    p.add_argument("file", help="a .tflite or .onnx file")
    p.add_argument("--json", action="store_true", help="print JSON")


def inspect_main(args) -> int:
    """Print ops, tensor dtypes, parameter count and size of a .tflite or .onnx file."""
    info = inspect_file(args.file)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"{info['path']}: {info['format']}, {info['bytes']:,} bytes ({info['gzip_bytes']:,} gzipped), "
          f"{info['params']:,} parameters")
    for kind in ("inputs", "outputs"):
        for t in info[kind]:
            q = f" scale={t['scale']:.6g} zero_point={t['zero_point']}" if t.get("scale") is not None else ""
            print(f"  {kind[:-1]:<6} {t['name']} {t['shape']} {t['dtype']}{q}")
    print("  ops: " + ", ".join(f"{op} x{n}" for op, n in info["ops"].items()))
    print("  weight dtypes: " + ", ".join(f"{d} x{n}" for d, n in info["weight_dtypes"].items()))
    return 0
