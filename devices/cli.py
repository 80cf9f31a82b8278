"""CLI for devices: `edgeport devices`, `edgeport bundle`, `edgeport deploy`, `edgeport rollback`."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from edgeport_runtime.errors import UsageError
from edgeport_runtime.select import threads_text

from .deploy import Target, deploy, rollback
from .offline import make_offline_bundle
from .fleet import fleet_deploy, fleet_rollback, fleet_status, result_table
from .profiles import get_profile, load_profiles
from .service import HEALTH_TIMEOUT, ServiceSpec, service_name


def devices_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport devices`."""
    p.add_argument("--json", action="store_true", help="print JSON")


def devices_main(args) -> int:
    """List the device profiles and what each can run."""
    profiles = load_profiles()
    if args.json:
        print(json.dumps([asdict(p) | {"formats": p.formats} for p in profiles.values()], indent=2))
        return 0
    print(f"{'profile':<19} {'arch':<8} {'os':<19} {'python':<6} {'cores':>5} {'RAM':>6} {'cpu':<12} "
          f"{'backend':<15} runs")
    for p in profiles.values():
        missing = p.cannot_run()
        runs = ", ".join(p.formats) + (f" (no {', '.join(q.description for q in missing)})" if missing else "")
        print(f"{p.name:<19} {p.arch:<8} {p.os:<19} {p.python:<6} {p.cores:>5} {p.ram_mb:>5}M "
              f"{p.cpu.split()[0]:<12} {p.backend:<15} {runs}")
    return 0


def _bundle_common(p):
    p.add_argument("bundle", help="bundle directory written by `edgeport convert`")
    p.add_argument("--device", required=True, help="profile name (see `edgeport devices`) or a profile .toml")


def bundle_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport bundle`."""
    _bundle_common(p)
    p.add_argument("--out", help="archive to write (default BUNDLE-PROFILE.tar.gz beside the bundle)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def bundle_main(args) -> int:
    """Write the offline device archive."""
    ob = make_offline_bundle(args.bundle, get_profile(args.device), args.out, args.force)
    size = ob.path.stat().st_size
    print(f"wrote {ob.path} ({size / 1e6:.1f} MB) for {ob.profile}: artifacts {', '.join(ob.artifacts)}; "
          f"{len(ob.wheels)} wheels. On the device: tar xzf {ob.path.name} && sh */install.sh")
    return 0


def _target_args(p):
    p.add_argument("--host", required=True, help="USER@HOST of the device")
    p.add_argument("--port", type=int, default=22, help="SSH port (default 22)")
    p.add_argument("--identity", help="SSH private key file (default: your ssh config / agent)")
    p.add_argument("--known-hosts", help="known_hosts file to check the device's host key against")
    p.add_argument("--accept-new-host-key", action="store_true",
                   help="trust the device's host key on first contact (keys that changed are still refused)")
    p.add_argument("--remote-dir", default="edgeport", help="directory on the device, relative to its home "
                                                            "(default edgeport)")
    p.add_argument("--lock-wait", type=int, default=600, metavar="SECONDS",
                   help="how long to wait for another deploy/rollback on the same device to finish (default 600)")


def _target(args):
    return Target(args.host, args.port, args.identity, args.known_hosts, args.accept_new_host_key,
                  args.remote_dir, args.lock_wait)


def deploy_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport deploy`."""
    _bundle_common(p)
    _target_args(p)
    g = p.add_argument_group("model service (edgeport-run serve on the device, health-gated switch)")
    g.add_argument("--service", action="store_true",
                   help="install (or update) the service that serves `current`; once a device has one, every "
                        "deploy and rollback restarts it and switches back when /health does not answer")
    g.add_argument("--service-scope", choices=("user", "system"), default="user",
                   help="systemd user unit of the deploying user (default; boot start via lingering) or a system "
                        "unit running as that user (needs root or passwordless sudo)")
    g.add_argument("--service-manager", choices=("systemd", "process"), default="systemd",
                   help="systemd (default), or a plain background process with a pid file for devices without "
                        "systemd (not restarted on failure or reboot)")
    g.add_argument("--service-host", default="127.0.0.1",
                   help="address the service listens on (default 127.0.0.1: this device only; 0.0.0.0 for the LAN)")
    g.add_argument("--service-port", type=int, default=8080, help="TCP port (default 8080)")
    g.add_argument("--service-token-file", metavar="PATH",
                   help="a file on the device holding a bearer token the service then requires (everything but / "
                        "and /health); absolute, or relative to --remote-dir. For --service-host 0.0.0.0")
    g.add_argument("--health-timeout", type=int, default=HEALTH_TIMEOUT, metavar="SECONDS",
                   help=f"how long the restarted service has to answer /health (default {HEALTH_TIMEOUT})")


def deploy_main(args) -> int:
    """Deploy and print the device's smoke parity, selection and bench; exit 1 when the health gate switched back
    (HealthGateError), 2 for every other failure."""
    spec = None
    if args.service:
        spec = ServiceSpec(args.service_manager, args.service_scope, args.service_host, args.service_port,
                           args.health_timeout, service_name(args.remote_dir), args.service_token_file).check()
    res = deploy(args.bundle, get_profile(args.device), _target(args), service=spec)
    b, s = res["bench"], res["selected"]
    print(f"deployed release {res['release']} to {res['host']} ({res['profile']}): "
          f"smoke {'passed' if res['smoke']['passed'] else 'FAILED'}; selected on the device from "
          f"{s['configurations']} configurations: {s['artifact']} [{s['backend']}, {threads_text(s['threads'])}] "
          f"p50 {b['latency_ms']['p50']:.4f} ms, cold start {b['cold_start_s'] * 1000:.0f} ms, "
          f"RSS {b['cold_start_rss_mb']:.0f} MiB. Results in {args.bundle}/devices/.")
    if not s["gated"]:
        print("note: the bundle has no parity results, so every artifact was a candidate; run `edgeport parity "
              f"{args.bundle}` before deploying to let only gated artifacts be chosen.")
    if "service" in res:
        v = res["service"]
        print(f"service {v['name']} ({v['mode']}) answers /health on {v['host']}:{v['port']} with this release.")
    return 0


def rollback_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport rollback`."""
    _target_args(p)
    p.add_argument("--bundle", help="bundle directory deployed to this host: record the rollback in its "
                                    "devices/*.json so `edgeport report` shows the release that is current now")


def rollback_main(args) -> int:
    """Switch the device back to its previous release (after checking it) and record that in --bundle."""
    if args.bundle and not (Path(args.bundle) / "devices").is_dir():
        raise UsageError(f"--bundle {args.bundle}: has no devices/ directory; pass the bundle directory you "
                         "deployed to this host with `edgeport deploy`.")
    rid, updated = rollback(_target(args), args.bundle)
    print(f"{args.host}: current release is now {rid}")
    if args.bundle:
        print(f"recorded in {', '.join(str(f) for f in updated) or 'no file (no deploy of this bundle to this host)'}")
    else:
        print("pass --bundle BUNDLE to record this in that bundle's report (edgeport report).")
    return 0


def fleet_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport fleet deploy|status|rollback`."""
    sub = p.add_subparsers(dest="fleet_command", metavar="ACTION", parser_class=type(p))
    sub.required = True

    def common(sp):
        sp.add_argument("--inventory", required=True, metavar="FILE",
                        help="Ansible inventory (INI or YAML); each host sets edgeport_profile")
        sp.add_argument("--known-hosts", help="known_hosts file to check the devices' host keys against "
                                              "(default: Ansible's ssh settings, ~/.ssh/known_hosts)")

    d = sub.add_parser("deploy", help="canary first, then rolling batches; stop past --max-fail")
    d.add_argument("bundle", help="bundle directory written by `edgeport convert`")
    common(d)
    d.add_argument("--canary", type=int, default=1, metavar="N",
                   help="hosts deployed first; any canary failure stops the rollout (default 1)")
    d.add_argument("--batch", default="20%", help="rolling batch size after the canaries, N or N%% "
                                                  "(Ansible serial; default 20%%)")
    d.add_argument("--max-fail", type=int, default=0, metavar="PCT",
                   help="failed or unreachable hosts a batch may have, in percent, before the rollout stops "
                        "(Ansible max_fail_percentage; default 0)")
    d.add_argument("--rollback-on-fail", action="store_true",
                   help="when the rollout stops, switch the hosts it already switched back to their previous "
                        "release")
    d.add_argument("--service", action="store_true", help="as `edgeport deploy --service`")
    s = sub.add_parser("status", help="each host's current release")
    common(s)
    r = sub.add_parser("rollback", help="switch every host back to its previous release")
    common(r)


def fleet_main(args) -> int:
    """Run a fleet action; print one row per host. Exit 1 when a host failed or the rollout stopped."""
    if args.fleet_command == "deploy":
        ro = fleet_deploy(args.bundle, args.inventory, args.canary, args.batch, args.max_fail,
                          args.rollback_on_fail, args.service, args.known_hosts)
        print(result_table(ro.hosts))
        n = {s: sum(h.status == s for h in ro.hosts)
             for s in ("switched", "failed", "unreachable", "stopped", "not run", "rolled back")}
        verdict = "complete" if ro.complete else "STOPPED (failures exceeded --max-fail or a canary failed)"
        print(f"rollout {verdict}: " + ", ".join(f"{v} {k}" for k, v in n.items() if v)
              + f". Results in {ro.path}; Ansible's log in {ro.log}.")
        return 0 if ro.ok else 1
    results = (fleet_status if args.fleet_command == "status" else fleet_rollback)(args.inventory, args.known_hosts)
    print(result_table(results))
    return 0 if all(r.status in ("ok", "rolled back") for r in results) else 1
