"""The API's error replies: always ``{"error": "one line"}``, whoever refuses the request.

Starlette answers some requests itself -- a malformed multipart body (400), an unknown path
(404), a method a route does not take (405), an exception in a handler (500) -- in plain text
by default; :data:`HANDLERS` makes those JSON like the app's own refusals, so the page (and any
client) reads every error the same way.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["HANDLERS", "error", "refuse"]


def error(message: str, status: int = 400, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def refuse(err: Exception, status: int = 400) -> JSONResponse:
    """The reply for an input error, after cutting the error loose from the request's frames.

    An error raised in a worker thread comes back through an awaited future that its own
    traceback reaches (future -> error -> traceback -> the awaiting frame -> future): a cycle
    only the garbage collector frees, holding every frame's locals -- a refused 63 MB upload
    and its decoded image -- until it runs. Twenty refused uploads held 1.4 GB that way."""
    message = str(err)
    seen = set()
    while err is not None and id(err) not in seen:  # the error and what it was raised from
        seen.add(id(err))
        err.__traceback__ = None
        err = err.__cause__ or err.__context__
    return error(message, status)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    # Starlette's detail for a bare status is its phrase ("Not Found"); a parser's is a
    # sentence ("Did not find boundary character 45 at index 2")
    return error(f"{exc.detail}", exc.status_code, getattr(exc, "headers", None))


async def _server_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises the exception after this reply: uvicorn logs its traceback
    return error(f"internal error: {type(exc).__name__}", 500)


HANDLERS = {HTTPException: _http_error, 500: _server_error}
