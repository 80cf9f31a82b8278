"""Real OpenSSH servers on free localhost ports as test "devices" (used by test_deploy.py and test_fleet.py).

Each server has its own throwaway host key, its own authorized client key and its own directory; a test starts and
stops it. A missing sshd fails the test with the command that installs it (it never skips).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional

import pytest

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


class SshServer:
    """One sshd on 127.0.0.1:<free port> with keys in ``d``; ``info`` has port, host, key, known_hosts, remote."""

    def __init__(self, d: Path, extra_config: str = ""):
        if SSHD is None:
            pytest.fail("the deploy tests need an OpenSSH server: apt-get install -y openssh-server "
                        "(`make test` installs it when run as root)")
        d.mkdir(parents=True, exist_ok=True)
        self.dir = d
        for key in ("host_key", "client_key"):
            _keygen(d / key)
        (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
        self.port = free_port()
        (d / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nAuthorizedKeysFile {d}/authorized_keys\n"
            f"PidFile {d}/sshd.pid\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            f"StrictModes no\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\n{extra_config}")
        host_pub = (d / "host_key.pub").read_text().split()
        self.known_hosts_line = f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n"
        (d / "known_hosts").write_text(self.known_hosts_line)
        os.makedirs("/run/sshd", exist_ok=True)
        self.proc: Optional[subprocess.Popen] = None
        self.start()
        self.user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
        self.info: Dict = {"port": self.port, "dir": d, "host": f"{self.user}@127.0.0.1",
                           "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts"),
                           "remote": str(d / "device")}

    def start(self) -> None:
        """Start sshd and wait until it accepts connections."""
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.dir / "sshd_config")],
                                     stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"sshd on port {self.port} did not start")

    def stop(self) -> None:
        """Stop this sshd (the processes it started for open sessions end with their connections)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
