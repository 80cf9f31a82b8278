"""Running the service: read the token, load the model, bind the socket, print the address, hand over to Uvicorn."""
from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import sys
from typing import Optional

from ..errors import UsageError

BACKLOG = 2048  # pending connections the kernel queues while the service is busy (uvicorn's default)


def read_token(path: str) -> str:
    """The bearer token: the file's content without surrounding whitespace.

    Raises:
        UsageError: no such file, unreadable, empty, or not one line of printable ASCII.
    """
    try:
        st = os.stat(path)
        with open(path, encoding="ascii") as f:
            token = f.read(4097).strip()
    except OSError as e:
        raise UsageError(f"--token-file {path}: cannot read it ({e.strerror or e}); expected a file holding the "
                         "token, e.g. made with: python3 -c 'import secrets; print(secrets.token_urlsafe(32))' > F")\
            from None
    except UnicodeDecodeError:
        raise UsageError(f"--token-file {path}: not ASCII text; the token must be printable ASCII.") from None
    if not token or len(token) > 4096 or any(not (33 <= ord(c) < 127) for c in token):
        raise UsageError(f"--token-file {path}: expected one token of 1-4096 printable ASCII characters without "
                         "spaces (e.g. from secrets.token_urlsafe(32)).")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(f"edgeport-run serve: warning: {path} is readable by other users; chmod 600 it.", file=sys.stderr)
    return token


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free port the kernel picks).

    Raises:
        UsageError: the host does not resolve, the port is taken or not allowed.
    """
    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port}: expected 0-65535 (0 picks a free port).")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UsageError(f"--host {host}: cannot resolve it ({e.strerror}); pass an address such as 127.0.0.1, "
                         "0.0.0.0 (all IPv4 interfaces) or ::.") from None
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # restart right after a stop (TIME_WAIT)
        sock.bind(addr)
        sock.listen(BACKLOG)
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UsageError(f"{host}:{port} is already in use (another service?); pass another --port, or "
                             "--port 0 for a free one.") from None
        if e.errno == errno.EACCES:
            raise UsageError(f"{host}:{port}: permission denied (ports below 1024 need root); pass --port 8080."
                             ) from None
        raise UsageError(f"cannot listen on {host}:{port} ({e.strerror or e}).") from None
    return sock


def url(sock: socket.socket) -> str:
    """http://HOST:PORT of a bound socket (IPv6 hosts in brackets)."""
    addr = sock.getsockname()
    host = addr[0]
    return f"http://[{host}]:{addr[1]}" if ":" in host else f"http://{host}:{addr[1]}"


def serve(source: str, host: str = "127.0.0.1", port: int = 8080, threads: Optional[int] = None,
          token_file: Optional[str] = None, artifact: Optional[str] = None, backend: Optional[str] = None,
          max_body_bytes: Optional[int] = None, max_batch: Optional[int] = None, top: int = 3,
          log_level: str = "warning") -> int:
    """Serve ``source`` until SIGINT/SIGTERM. Prints ``listening on http://HOST:PORT`` as stdout's first line
    once the model is loaded and the socket listens (a client may connect from then on)."""
    try:
        import uvicorn
    except ImportError:
        raise UsageError("edgeport-run serve needs the [serve] extra: pip install 'edgeport-runtime[serve]'.") \
            from None
    from .app import Options, create_app

    if max_body_bytes is not None and max_body_bytes < 1:
        raise UsageError(f"--max-body-bytes must be >= 1, got {max_body_bytes}.")
    if max_batch is not None and max_batch < 1:
        raise UsageError(f"--max-batch must be >= 1, got {max_batch}.")
    if top < 1:
        raise UsageError(f"--top must be >= 1, got {top}.")
    token = read_token(token_file) if token_file else None
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"edgeport-run serve: warning: listening on {host} without --token-file: anyone on the network can "
              "use the model.", file=sys.stderr)
    opts = Options(token=token, top=top)
    if max_body_bytes is not None:
        opts.max_body_bytes = max_body_bytes
    if max_batch is not None:
        opts.max_batch = max_batch
    # a release directory loads its bundle/ like any bundle (and load() applies the release's selection)
    app = create_app(source, artifact=artifact, backend=backend, threads=threads, options=opts)
    sock = bind(host, port)
    print(f"listening on {url(sock)}", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", server_header=False)
    server = uvicorn.Server(config)
    # Uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that was there
    # before it: make that one a no-op, so a requested stop ends with exit 0 (not -15 or a KeyboardInterrupt).
    previous = {s: signal.signal(s, lambda *_: None) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0
