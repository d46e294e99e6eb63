"""Serving the app with uvicorn: the socket is bound before the address is announced, so a
port in use (or one that does not exist) is a one-line error and never a "web app on ..."
line followed by a failure."""

from __future__ import annotations

import socket
from pathlib import Path

from ..errors import InputError
from .app import create_app
from .inputs import DEFAULT_MAX_MEGAPIXELS
from .jobs import DEFAULT_TIMEOUT
from .security import default_hosts

__all__ = ["bind", "serve"]


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or :class:`InputError` in one line."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = found[0]
    except (socket.gaierror, UnicodeError) as err:
        raise InputError(f"--host {host!r}: not an address this machine has ({err})") from None
    sock = socket.socket(family, kind, proto)
    # as uvicorn does: a restarted server may take its port back from connections closing
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        reason = "is in use (another server, or an earlier segrefine serve?)" \
            if err.errno in (98, 48) else f"cannot be opened ({err.strerror})"  # fmt: skip
        raise InputError(f"port {port} on {host} {reason}") from None
    sock.set_inheritable(True)
    return sock


def serve(runs: str | Path | None = "runs", host: str = "127.0.0.1", port: int = 7860,
          max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, device: str = "cpu",
          allow_hosts: tuple[str, ...] = (), max_upload_mb: float = 64.0,
          max_pending: int = 8, attention_model=None,
          job_timeout: float | None = DEFAULT_TIMEOUT, backend: str = "torch") -> None:  # fmt: skip
    """Run the app with uvicorn until interrupted (``attention_model``: a loaded model or a
    Stable Diffusion folder for the attention tab, or None for no tab; ``job_timeout``: the
    seconds one job may run; ``backend``: what runs the networks, torch or onnxruntime)."""
    import uvicorn

    sock = bind(host, port)  # before the app loads the runs: a busy port fails at once
    hosts = default_hosts(host) | {h.lower() for h in allow_hosts}
    app = create_app(runs, max_megapixels, device, hosts, max_upload_mb, max_pending,
                     attention_model=attention_model, job_timeout=job_timeout,
                     backend=backend)  # fmt: skip
    note = "" if attention_model is None else "; attention tab on"
    shown = Path(runs).resolve() if runs is not None else "the zoo alone"
    port = sock.getsockname()[1]  # port 0: the one the system chose
    print(
        f"segrefine web app on http://{host}:{port}  (runs: {shown}; "
        f"answers to {', '.join(sorted(hosts))}{note})",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
