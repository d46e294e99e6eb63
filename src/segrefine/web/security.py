"""What the web server trusts: only its own names, only its own pages, only bounded bodies.

:class:`Guard` is an ASGI middleware in front of the whole app:

* **Host allow-list.** A request whose ``Host`` is not one of the names the server was started
  for is refused (400). A web page on another site cannot then read results through DNS
  rebinding (its requests carry that site's host name).
* **Same origin for anything that starts work.** A ``POST`` (any method but GET/HEAD/OPTIONS)
  whose ``Origin`` is not this server, or that a browser marks ``Sec-Fetch-Site: cross-site``,
  is refused (403): another site's page cannot start jobs (CSRF). Clients that send neither
  header (curl, scripts) are not browsers acting for another site and are let through.
* **Bounded bodies.** A body over ``max_body_bytes`` is refused (413) from its declared length,
  or as soon as the streamed bytes pass the limit; the app parses a body only once it is all
  in, so no request holds more than the limit. The body is held once: its pieces are handed
  to the app one at a time and let go as they are parsed, and after a large body is refused
  (by the app or here) the freed heap is handed back to the system, as after a job.
* Every response says ``X-Content-Type-Options: nosniff`` and carries a Content-Security-Policy
  that allows the page's own script, styles and images only.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from starlette.concurrency import run_in_threadpool

from .jobs import release_freed_memory

__all__ = ["CSP", "Guard", "default_hosts"]

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; "
       "base-uri 'none'; form-action 'self'")  # fmt: skip
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
# a refused body at least this large is followed by a trim of the heap (what parsing it
# freed stays in glibc's arenas otherwise)
TRIM_AFTER_BYTES = 1_000_000


def default_hosts(host: str) -> set[str]:
    """The names a server listening on ``host`` answers to: the loopback names, and ``host``
    itself unless it is a wildcard address."""
    names = {"localhost", "127.0.0.1", "::1"}
    if host not in ("0.0.0.0", "::", ""):
        names.add(host.strip("[]").lower())
    return names


def _hostname(value: str) -> str:
    """'example.org:8000' -> 'example.org'; '[::1]:80' -> '::1'."""
    return (urlsplit(f"//{value}").hostname or "").lower()


class Guard:
    def __init__(self, app, allowed_hosts: set[str], max_body_bytes: int):
        self.app, self.max_body = app, max_body_bytes
        self.hosts = {h.lower() for h in allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get("host", "")
        if _hostname(host) not in self.hosts:  # no wildcard: each name is given
            return await _refuse(send, 400, f"host {host!r} is not served here (segrefine "
                                            "serve --allow-host adds a name)")  # fmt: skip
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            if (origin is not None and urlsplit(origin).netloc.lower() != host.lower()) or \
                    headers.get("sec-fetch-site") == "cross-site":  # fmt: skip
                return await _refuse(send, 403, "requests from other sites are refused")
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
                return await _refuse(send, 413, self._too_large())
            body, size = await self._read_bounded(receive)
            if body is None:
                await _refuse(send, 413, self._too_large())
                if size >= TRIM_AFTER_BYTES:
                    await run_in_threadpool(release_freed_memory)
                return
            receive = _replay(body, receive)
            del body  # the replay holds the only reference, and lets it go when done
        else:
            size = 0
        status = []

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                status.append(message["status"])
                message["headers"] = [*message.get("headers", []),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"content-security-policy", CSP.encode())]  # fmt: skip
            await send(message)

        await self.app(scope, receive, send_with_headers)
        if size >= TRIM_AFTER_BYTES and status and status[0] >= 400:
            await run_in_threadpool(release_freed_memory)  # after a job it is the worker's

    def _too_large(self) -> str:
        return (f"request body is over the server's limit of {self.max_body / 1e6:g} MB "
                "(segrefine serve --max-upload-mb)")  # fmt: skip

    async def _read_bounded(self, receive) -> tuple[bytearray | None, int]:
        """The whole body, read before the app sees any of it, and its size; None once it
        passes the limit (the rest is not read). One buffer, not the server's 64 kB pieces:
        those would stay in the heap's arenas once freed, beside the upload the app reads."""
        body, seen = bytearray(), 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_body:
                return None, seen
            body += chunk
            if not message.get("more_body", False):
                break
        return body, seen


REPLAY_BYTES = 1 << 20  # the pieces the app is handed


def _replay(body: bytearray, receive):
    """``receive`` for the app: the body in pieces, the buffer let go with the last one (the
    parser writes a file part to disk, so the body is not held twice), then ``receive``."""
    view, offset = memoryview(body), 0
    del body

    async def replayed():
        nonlocal view, offset
        if view is None:
            return await receive()  # then whatever comes next (a disconnect)
        piece = bytes(view[offset : offset + REPLAY_BYTES])
        offset += len(piece)
        more = offset < len(view)
        if not more:
            view.release()
            view = None
        return {"type": "http.request", "body": piece, "more_body": more}

    return replayed


async def _refuse(send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
