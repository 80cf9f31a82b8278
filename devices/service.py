"""The model service on a device: what `edgeport deploy --service` installs and how the switch waits for it.

Two managers:

* ``systemd`` (the default): a unit ``NAME.service`` that runs ``edgeport-run serve ROOT/current`` from the
  current release's own venv, restarts it on failure and starts it at boot. ``--service-scope user`` (default)
  installs it in ``~/.config/systemd/user/`` for the deploying user (boot start needs lingering, which the device
  script turns on with ``loginctl enable-linger``); ``system`` in ``/etc/systemd/system/`` with ``User=`` the
  deploying user (root, or passwordless ``sudo`` for the deploying user, is needed to install it).
* ``process``: a plain background process with a pid file, for devices without systemd (containers, minimal
  images). Nothing restarts it when it dies or the device reboots.

The service binds to 127.0.0.1 unless told otherwise. Its interpreter threads, artifact and backend are the
release's selection (``selected.json``: measured on the device at 1..the profile's cores, see
:mod:`edgeport_runtime.select`), so the unit never pins a thread count that could be the slow one.

With ``token_file`` (a file on the device) the service requires its bearer token on everything but / and /health
(for a LAN service: ``--service-host 0.0.0.0``).

The device keeps the choice in ``ROOT/service.conf`` (one line: MODE NAME HOST PORT HEALTH_TIMEOUT TOKEN_FILE);
every later deploy and rollback of that ROOT restarts the service and waits for its /health before it keeps the
switch.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Optional

from edgeport_runtime.errors import UsageError

MANAGERS = ("systemd", "process")
SCOPES = ("user", "system")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
HOSTNAME_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}"
                         r"[A-Za-z0-9])?)*$")
TOKEN_PATH_RE = re.compile(r"^[A-Za-z0-9._/-]{1,200}$")  # it travels in service.conf (space-separated) and a unit
HEALTH_TIMEOUT = 90  # seconds: Python + Starlette + Uvicorn + the model start in ~2 s here, far longer on a Pi Zero


@dataclass(frozen=True)
class ServiceSpec:
    """How the service runs on the device."""

    manager: str = "systemd"
    scope: str = "user"
    host: str = "127.0.0.1"
    port: int = 8080
    health_timeout: int = HEALTH_TIMEOUT
    name: str = "edgeport"
    token_file: Optional[str] = None  # on the device: absolute, or relative to the device directory

    def check(self) -> "ServiceSpec":
        """Refuse values that do not fit (they end up in a unit file and in device shell commands)."""
        if self.manager not in MANAGERS:
            raise UsageError(f"--service-manager {self.manager!r}: expected one of {', '.join(MANAGERS)}.")
        if self.scope not in SCOPES:
            raise UsageError(f"--service-scope {self.scope!r}: expected one of {', '.join(SCOPES)}.")
        if not host_ok(self.host):
            raise UsageError(f"--service-host {self.host!r}: expected an IP address (127.0.0.1, 0.0.0.0 for every "
                             "interface, ::) or a host name.")
        if isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise UsageError(f"--service-port {self.port}: expected a TCP port from 1 to 65535.")
        if isinstance(self.health_timeout, bool) or not 1 <= self.health_timeout <= 3600:
            raise UsageError(f"--health-timeout {self.health_timeout}: expected seconds from 1 to 3600.")
        if not NAME_RE.match(self.name):
            raise UsageError(f"service name {self.name!r}: expected letters, digits, '.', '_', '-' (at most 64).")
        if self.token_file is not None and (not TOKEN_PATH_RE.match(self.token_file)
                                            or ".." in self.token_file.split("/")):
            raise UsageError(f"--service-token-file {self.token_file!r}: expected a path on the device (letters, "
                             "digits, '.', '_', '-', '/'; no '..'), absolute or relative to --remote-dir.")
        return self

    @property
    def mode(self) -> str:
        """``systemd-user``, ``systemd-system`` or ``process``: the device scripts' word for manager + scope."""
        return f"systemd-{self.scope}" if self.manager == "systemd" else "process"

    def conf_line(self) -> str:
        """The device's ROOT/service.conf line (MODE NAME HOST PORT HEALTH_TIMEOUT TOKEN_FILE, '-' for none)."""
        return f"{self.mode} {self.name} {self.host} {self.port} {self.health_timeout} {self.token_file or '-'}"


def host_ok(host: str) -> bool:
    """An IPv4/IPv6 address or a DNS host name (nothing a shell or a unit file could misread)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(HOSTNAME_RE.match(host)) and len(host) <= 253


def service_name(remote_dir: str) -> str:
    """The unit name for a device directory: ``edgeport`` for the default ``edgeport``, else ``edgeport-<dir>``
    (two directories on one device get two services)."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", remote_dir).strip("-.")[:48]
    return "edgeport" if slug in ("", "edgeport") else f"edgeport-{slug}"


def systemd_quote(arg: str, executable: bool = False) -> str:
    """One ExecStart= word, double-quoted for systemd: backslash and quote escaped, ``%`` (specifiers) doubled,
    and ``$`` (variable expansion, which systemd applies to the arguments but not to the ``executable`` path)
    doubled in arguments, so the value reaches the program exactly.

    Raises:
        UsageError: control characters (a unit file line cannot hold them).
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in arg):
        raise UsageError(f"{arg!r}: control characters cannot go into a systemd unit.")
    out = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return '"' + (out if executable else out.replace("$", "$$")) + '"'


def render_unit(spec: ServiceSpec, root: str, user: str) -> str:
    """The systemd unit for ``spec`` serving ``root``/current (``root``: the device directory, absolute; ``user``:
    the account it runs as in system scope).

    Raises:
        UsageError: a relative ``root``, a bad user name, or values that do not fit (see :meth:`ServiceSpec.check`).
    """
    spec.check()
    if not root.startswith("/"):
        raise UsageError(f"device directory {root!r}: expected an absolute path.")
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$", user):
        raise UsageError(f"device user {user!r}: not a user name a unit can run as.")
    root = root.rstrip("/") or "/"
    cmd = [f"{root}/current/venv/bin/edgeport-run", "serve", f"{root}/current", "--host", spec.host,
           "--port", str(spec.port)]
    if spec.token_file:
        cmd += ["--token-file", spec.token_file if spec.token_file.startswith("/") else f"{root}/{spec.token_file}"]
    system = spec.scope == "system"
    lines = [
        "# Written by `edgeport deploy --service`; every deploy and rollback of this directory restarts it and",
        "# waits for /health. Threads, artifact and backend: the release's selected.json (measured on this device).",
        "[Unit]",
        f"Description=edgeport model service ({root}/current)",
        "After=network-online.target",
        "Wants=network-online.target",
        "# a release that crashes at start is retried 5 times a minute, then left failed (the deploy rolls back)",
        "StartLimitIntervalSec=60",
        "StartLimitBurst=5",
        "",
        "[Service]",
        "Type=exec",
        *([f"User={user}"] if system else []),
        "ExecStart=" + " ".join(systemd_quote(a, executable=i == 0) for i, a in enumerate(cmd)),
        "Restart=on-failure",
        "RestartSec=2",
        "Environment=PYTHONUNBUFFERED=1",
        "NoNewPrivileges=yes",
        *(["PrivateTmp=yes", "ProtectSystem=full"] if system else []),
        "",
        "[Install]",
        f"WantedBy={'multi-user.target' if system else 'default.target'}",
        "",
    ]
    return "\n".join(lines)
