"""`edgeport report`: one row per artifact (size, metric, agreement, latency, RSS, gate) as .md, .json and .png.

report.json is a stable interface. Top level: ``keras`` {``accuracy`` (or ``reconstruction_mse``), ``params``,
``macs``, ``latency_ms_p50``}, ``model``, ``dataset``, ``artifacts`` [{``name, format, recipe, bytes, gzip_bytes,
accuracy, accuracy_delta_pp, agreement, max_abs_diff, latency_ms_p50, rss_mb, gate``} + extra keys, among them
``accuracy_delta_low_pp`` / ``accuracy_delta_high_pp`` (one-sided 95% bounds) and ``inconclusive``], ``passed``
(no gate failed), ``devices`` [{``profile, host, release, artifact, backend, threads, latency_ms_p50,
cold_start_s, rss_mb, smoke``} + ``selected`` {``artifact, backend, threads, latency_ms_p50, throughput_per_s,
gated, configurations``} and ``selection_table`` (the device's measurements) when the device chose its
configuration itself], ``fleet`` (the newest `edgeport fleet deploy` of the bundle, or null) {``file, started,
complete, policy, releases, hosts, switched, failed, unreachable, stopped, not_run, rolled_back, p50_ms_median``},
``skipped`` {recipe: why it is not in the bundle (e.g. a sparsity not achievable with the data, with the
numbers)}; fine-tuning rows also carry ``sparsity_search`` [{``target_sparsity, sparsity, value, keras_value,
delta_pp, gzip_bytes, passed``} per attempt on convert's validation split] and ``fine_tune_warnings``.
``gate`` is ``pass``, ``FAIL``, ``inconclusive`` or ``not run``.
For autoencoders ``accuracy`` holds the reconstruction MSE and ``metric`` says so.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from edgeport_runtime.errors import UsageError
from edgeport_runtime.manifest import atomic_write_text, read_manifest

from ..data.run import read_record
from .report_plot import plot_report

REPORT_KEYS = ("name", "format", "recipe", "bytes", "gzip_bytes", "accuracy", "accuracy_delta_pp", "agreement",
               "max_abs_diff", "latency_ms_p50", "rss_mb", "gate")


def _load(bdir: Path, name: str, hint: str) -> Dict[str, Any]:
    p = bdir / name
    if not p.is_file():
        raise UsageError(f"{bdir}: no {name}; run `{hint}` first (or `make report`).")
    return json.loads(p.read_text())


def build_report(bundle: str) -> Dict[str, Any]:
    """Merge the manifest, parity.json, bench.json and the run's train.json into the report dict."""
    bdir = Path(bundle)
    man = read_manifest(bdir)
    par = _load(bdir, "parity.json", f"edgeport parity {bundle}")
    ben = _load(bdir, "bench.json", f"edgeport bench {bundle}")
    train = read_record(Path(man.source.run_dir)) if man.source.run_dir else {}
    keras_lat = (ben.get("keras") or {}).get("latency_ms", {}).get("p50")
    metric = par["keras"]["metric"]
    keras = {metric: par["keras"]["value"], "metric": metric, "params": train.get("params"),
             "macs": train.get("macs"), "latency_ms_p50": keras_lat,
             "rss_mb": (ben.get("keras") or {}).get("peak_rss_mb"),
             "cold_start_s": (ben.get("keras") or {}).get("cold_start_s")}
    if metric != "accuracy":
        keras["accuracy"] = par["keras"]["value"]
    bench_rows = {r["name"]: r for r in ben["artifacts"]}
    rows: List[Dict[str, Any]] = []
    for art in man.artifacts:
        pars = [p for p in par["artifacts"] if p["name"] == art.name]
        b = bench_rows.get(art.name, {})
        main = next((p for p in pars if p["backend"] == b.get("backend")), pars[0] if pars else None)
        lat = b.get("latency_ms_p50")
        outcomes = {p.get("outcome", "pass" if p["passed"] else "fail") for p in pars}
        gate = ("not run" if not pars else "FAIL" if "fail" in outcomes else
                "inconclusive" if "inconclusive" in outcomes else "pass")
        stable = {
            "name": art.name, "format": art.format, "recipe": art.recipe, "bytes": art.bytes,
            "gzip_bytes": art.gzip_bytes, "accuracy": main["value"] if main else None,
            "accuracy_delta_pp": main["delta_pp"] if main else None,
            "agreement": main["agreement"] if main else None,
            "max_abs_diff": main["max_abs_diff"] if main else None, "latency_ms_p50": lat,
            "rss_mb": b.get("rss_mb"), "gate": gate,
        }
        # the stable interface first, in its documented order: a key in REPORT_KEYS the builder does not fill
        # is a KeyError here, not a silently missing column
        rows.append({**{k: stable[k] for k in REPORT_KEYS},
            "accuracy_delta_low_pp": main.get("delta_low_pp") if main else None,
            "accuracy_delta_high_pp": main.get("delta_high_pp") if main else None,
            "max_drop_pp": (par.get("gates", {}).get(art.recipe) or {}).get("max_drop_pp"),
            "metric": metric, "backend": b.get("backend"), "sparsity": art.sparsity,
            "latency_ms_p90": b.get("latency_ms_p90"), "latency_ms_p50_all_cores": b.get("latency_ms_p50_all_cores"),
            "throughput_batch32_per_s": b.get("throughput_batch32_per_s"), "cold_start_s": b.get("cold_start_s"),
            "speedup_vs_keras": round(keras_lat / lat, 1) if keras_lat and lat else None,
            "failures": [f"[{p['backend']}] {f}" for p in pars for f in p["failures"]],
            "inconclusive": [f"[{p['backend']}] {f}" for p in pars for f in p.get("inconclusive", [])],
            "backends": {p["backend"]: {"value": p["value"], "passed": p["passed"]} for p in pars},
            # fine-tuning recipes: every sparsity tried on the validation split, and what convert warned about
            "sparsity_search": (art.extra or {}).get("sparsity_search"),
            "fine_tune_warnings": list((art.extra or {}).get("warnings") or []),
        })
    return {"bundle": str(bdir), "task": man.task, "test_samples": par["samples"], "keras": keras,
            "model": train.get("model") or Path(man.source.path or "model").stem,
            "dataset": train.get("dataset") or (man.source.data.data if man.source.data else None) or "unknown data",
            "artifacts": rows, "skipped": dict(man.skipped or {}),
            "passed": all(r["gate"] in ("pass", "inconclusive") for r in rows),
            "cores": ben.get("cores"), "accuracy_measured": par.get("accuracy_measured", True),
            "note": par.get("note"),
            "devices": device_rows(bdir), "fleet": fleet_summary(bdir), "toolchain": man.toolchain}


def device_rows(bdir: Path) -> List[Dict[str, Any]]:
    """One row per device deployed to (BUNDLE/devices/*.json written by `edgeport deploy`).

    ``current`` is the release the device ran when edgeport last looked (the deploy, or an `edgeport rollback
    --bundle` of this bundle); when that is not this bundle's release, ``release`` says so, so the table never
    shows a rolled-back release as the one running.
    """
    rows = []
    for f in sorted((bdir / "devices").glob("*.json")):
        d = json.loads(f.read_text())
        b = d["bench"]
        current = d.get("current", d["release"])  # files from before rollbacks were recorded: the deploy's own
        release = d["release"] if current == d["release"] else \
            f"{d['release']} (rolled back: current is {current} since {d.get('current_since', '?')})"
        rows.append({"profile": d["profile"], "host": d["host"], "release": release, "artifact": b["artifact"],
                     "backend": b["backend"], "threads": b["threads"], "latency_ms_p50": b["latency_ms"]["p50"],
                     "cold_start_s": b.get("cold_start_s"), "rss_mb": b.get("cold_start_rss_mb"),
                     "smoke": "pass" if d["smoke"]["passed"] else "FAIL", "deployed": d["deployed"],
                     "current_release": current, "is_current": current == d["release"]})
        if isinstance(d.get("selected"), dict):
            rows[-1]["selected"] = d["selected"]
            rows[-1]["selection_table"] = _selection_table(f.with_suffix("") / "selected.json")
    return rows


def _selection_table(path: Path) -> List[Dict[str, Any]]:
    """The rows of a device's selected.json (pulled back by `edgeport deploy`); [] when it is missing or not the
    JSON the device writes."""
    try:
        table = json.loads(path.read_text()).get("table")
    except (OSError, ValueError, AttributeError):
        return []
    return [r for r in table if isinstance(r, dict)] if isinstance(table, list) else []


def _selection_md(d: Dict[str, Any]) -> List[str]:
    """The device section's table of what the device measured, the chosen configuration marked."""
    s = d["selected"]
    lines = ["", f"Chosen on {d['profile']} ({d['host']}): **{s['artifact']} [{s['backend']}, {s['threads']} "
             f"thread{'' if s['threads'] == 1 else 's'}]**, the lowest batch-1 p50 latency of "
             f"{s['configurations']} configurations measured on the device"
             + (" among the artifacts that passed their gates." if s.get("gated") else
                " (the bundle had no parity results: every artifact was a candidate)."), ""]
    if not d["selection_table"]:
        return lines
    lines += ["| artifact | backend | threads | p50 ms | samples/s (batch 32) | gate | device check |",
              "|---|---|---:|---:|---:|---|---|"]
    for r in d["selection_table"]:
        chosen = (r.get("artifact"), r.get("backend"), r.get("threads")) == (s["artifact"], s["backend"],
                                                                            s["threads"])
        name = f"**{r.get('artifact')}**" if chosen else str(r.get("artifact"))
        check = r.get("error") or r.get("check") or "-"
        lines.append(f"| {name} | {r.get('backend')} | {r.get('threads')} | {_fmt(r.get('latency_ms_p50'), '.4f')} | "
                     f"{_fmt(r.get('throughput_per_s'), ',.0f')} | {r.get('gate', '-')} | {check} |")
    return lines


def _fmt(v, spec, missing="-"):
    return missing if v is None else format(v, spec)


def _delta(r: Dict[str, Any]) -> str:
    if r["accuracy_delta_pp"] is None:
        return "-"
    if r.get("accuracy_delta_low_pp") is None:
        return f"{r['accuracy_delta_pp']:+.2f}"
    return f"{r['accuracy_delta_pp']:+.2f} [{r['accuracy_delta_low_pp']:+.2f}, {r['accuracy_delta_high_pp']:+.2f}]"


def table(rep: Dict[str, Any]) -> str:
    """The report as a Markdown table (also printed at the end of `make`)."""
    k = rep["keras"]
    metric = k["metric"]
    acc_spec = ".4f" if metric == "accuracy" else ".5g"
    lines = [f"| artifact | format | size | gzip | {metric} | delta pp [95% bounds] | agreement | p50 ms | "
             "speedup vs Keras | RSS MiB | gate |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    lines.append(f"| keras (reference) | keras | - | - | {_fmt(k[metric], acc_spec)} | - | - | "
                 f"{_fmt(k['latency_ms_p50'], '.3f')} | 1.0x | {_fmt(k.get('rss_mb'), '.0f')} | - |")
    for r in rep["artifacts"]:
        lines.append(
            f"| {r['name']} | {r['format']} | {r['bytes'] / 1024:.1f} KiB | {r['gzip_bytes'] / 1024:.1f} KiB | "
            f"{_fmt(r['accuracy'], acc_spec)} | {_delta(r)} | "
            f"{_fmt(r['agreement'], '.2%')} | {_fmt(r['latency_ms_p50'], '.4f')} | "
            f"{_fmt(r['speedup_vs_keras'], '.0f')}x | {_fmt(r['rss_mb'], '.0f')} | {r['gate']} |")
    return "\n".join(lines)


def fine_tune_lines(rep: Dict[str, Any]) -> List[str]:
    """Markdown for the sparsity search (every attempt), fine-tuning warnings and recipes skipped as not
    achievable; empty when no recipe fine-tuned or was skipped."""
    md: List[str] = []
    for r in rep["artifacts"]:
        search = r.get("sparsity_search")
        if search:
            md += ["", f"Sparsity search of {r['name']} on convert's validation split (highest passing kept: "
                       f"{_fmt(r.get('sparsity'), '.0%')}):", "",
                   "| target sparsity | sparsity | validation value | Keras | delta pp | gzip | within gate |",
                   "|---:|---:|---:|---:|---:|---:|---|"]
            for a in search:
                md.append(f"| {a['target_sparsity']:g} | {a['sparsity']:.1%} | {a['value']:.4g} | "
                          f"{a['keras_value']:.4g} | {_fmt(a.get('delta_pp'), '+.2f')} | "
                          f"{a['gzip_bytes'] / 1024:.1f} KiB | {'yes' if a['passed'] else 'no'} |")
        for w in r.get("fine_tune_warnings") or []:
            md.append(f"- {r['name']}: warning: {w}")
    for name, why in (rep.get("skipped") or {}).items():
        md.append(f"- {name}: not in the bundle: {why}")
    return md


def _verdict(rep: Dict[str, Any]) -> str:
    gates = [r["gate"] for r in rep["artifacts"]]
    return (f"{gates.count('pass')} passed, {gates.count('FAIL')} failed, {gates.count('inconclusive')} "
            "inconclusive")


def write_report(bundle: str) -> Dict[str, Any]:
    """Write report.json, report.md and report.png into the bundle; return the report dict."""
    rep = build_report(bundle)
    bdir = Path(bundle)
    atomic_write_text(bdir / "report.json", json.dumps(rep, indent=2) + "\n")
    md = [f"# edgeport report: {rep['model']} on {rep['dataset']}", "", f"Bundle {bdir}. Task {rep['task']}, "
          f"{rep['test_samples']} held-out test samples, "
          f"latency at batch 1 with 1 thread on {rep['cores']} cores. Gates: "
          f"{_verdict(rep)}. Deltas are artifact minus Keras with one-sided 95% confidence bounds "
          f"(one sample is {100 / rep['test_samples']:.2g} pp).", "", table(rep), ""]
    if rep.get("note"):  # e.g. no labels: accuracy was not measured, and the reader must not assume it was
        md[3:3] = [f"**{rep['note'][0].upper()}{rep['note'][1:]}.**", ""]
    for r in rep["artifacts"]:
        for f in r["failures"]:
            md.append(f"- {r['name']}: FAIL: {f}")
        for f in r.get("inconclusive", []):
            md.append(f"- {r['name']}: inconclusive: {f}")
    md += fine_tune_lines(rep)
    if rep["devices"]:
        md += ["", "## Devices", "", "| device | host | release | artifact | backend | threads | p50 ms | cold start s "
               "| RSS MiB | smoke parity |", "|---|---|---|---|---|---:|---:|---:|---:|---|"]
        for d in rep["devices"]:
            md.append(f"| {d['profile']} | {d['host']} | {d['release']} | {d['artifact']} | {d['backend']} | "
                      f"{d['threads']} | {d['latency_ms_p50']:.4f} | {_fmt(d['cold_start_s'], '.3f')} | "
                      f"{_fmt(d['rss_mb'], '.0f')} | {d['smoke']} |")
        for d in rep["devices"]:
            if d.get("selected"):
                md += _selection_md(d)
    if rep.get("fleet"):
        md += ["", "## Fleet", "", fleet_line(rep["fleet"])]
    md.append("")
    atomic_write_text(bdir / "report.md", "\n".join(md))
    tmp_png = bdir / ".report.png.tmp.png"
    plot_report(rep, tmp_png)
    tmp_png.replace(bdir / "report.png")
    return rep


FLEET_STATUSES = ("switched", "failed", "unreachable", "stopped", "not run", "rolled back")


def fleet_line(f: Dict[str, Any]) -> str:
    """One sentence for report.md: the newest fleet rollout's outcome."""
    counts = ", ".join(f"{f[k.replace(' ', '_')]} {k}" for k in FLEET_STATUSES if f[k.replace(' ', '_')])
    return (f"Rollout of {f['started']} ({f['file']}): {'complete' if f['complete'] else 'STOPPED'} on "
            f"{f['hosts']} hosts: {counts}; median p50 {_fmt(f['p50_ms_median'], '.4f')} ms "
            f"(canary {f['policy']['canary']}, batch {f['policy']['batch']}, max fail {f['policy']['max_fail']}%).")


def fleet_summary(bdir: Path) -> Optional[Dict[str, Any]]:
    """The newest fleet rollout of this bundle (BUNDLE/fleet/*.json written by `edgeport fleet deploy`), counted
    by host status; None when the bundle was never rolled out to a fleet."""
    files = sorted((bdir / "fleet").glob("*.json"))
    if not files:
        return None
    d = json.loads(files[-1].read_text())
    statuses = [h["status"] for h in d["hosts"]]
    p50 = sorted(h["p50_ms"] for h in d["hosts"] if h.get("p50_ms") is not None)
    return {"file": f"fleet/{files[-1].name}", "started": d["started"], "complete": d["complete"],
            "policy": d["policy"], "releases": d["releases"], "hosts": len(statuses),
            **{k.replace(" ", "_"): statuses.count(k) for k in FLEET_STATUSES},
            "p50_ms_median": p50[len(p50) // 2] if p50 else None}
