"""CLI for devices: `edgeport devices`, `edgeport bundle`, `edgeport deploy`, `edgeport rollback`."""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from edgeport_runtime.errors import UsageError

from .deploy import Target, deploy, rollback
from .offline import make_offline_bundle
from .profiles import get_profile, load_profiles


def devices_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `edgeport devices`."""
    p.add_argument("--json", action="store_true", help="print JSON")


def devices_main(args) -> int:
    """List the device profiles and what each can run."""
    profiles = load_profiles()
    if args.json:
        print(json.dumps([asdict(p) | {"formats": p.formats} for p in profiles.values()], indent=2))
        return 0
    print(f"{'profile':<16} {'arch':<8} {'python':<6} {'cores':>5} {'RAM':>6} {'cpu':<12} {'backend':<15} runs")
    for p in profiles.values():
        runs = ", ".join(p.formats) + (" (no dynamic-range)" if p.backends == ["tflite-runtime"] else "")
        print(f"{p.name:<16} {p.arch:<8} {p.python:<6} {p.cores:>5} {p.ram_mb:>5}M {p.cpu.split()[0]:<12} "
              f"{p.backend:<15} {runs}")
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


def deploy_main(args) -> int:
    """Deploy and print the device's smoke parity and bench; exit 1 if the device's smoke check failed."""
    res = deploy(args.bundle, get_profile(args.device), _target(args))
    b = res["bench"]
    print(f"deployed release {res['release']} to {res['host']} ({res['profile']}): "
          f"smoke {'passed' if res['smoke']['passed'] else 'FAILED'}; {b['artifact']} [{b['backend']}, "
          f"{b['threads']} threads] p50 {b['latency_ms']['p50']:.4f} ms, cold start {b['cold_start_s'] * 1000:.0f} ms, "
          f"RSS {b['cold_start_rss_mb']:.0f} MiB. Results in {args.bundle}/devices/.")
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
