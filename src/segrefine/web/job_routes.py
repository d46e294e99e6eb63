"""The API's routes for a job once it is submitted: its state, its files, a close-up, and
cancelling it. A job's id is random and known only to whoever submitted it, so holding the id
is what makes a client the job's owner; cancelling changes state, so the same-origin checks
of every other state-changing request apply to it (``security.py``)."""

from __future__ import annotations

import re
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import InputError
from .jobs import JobQueue
from .pipeline import zoom_view
from .replies import error, refuse

__all__ = ["job_routes"]

# the coarse input's files are named after where it came from: "segmenter" only for one
SOURCES = {"mask": "mask", "box": "grabcut"}


def _download_name(job, name: str) -> str:
    """``<input's stem>_<file>``, with ``segmenter`` in a file's name replaced by its source
    when the user's mask or box stood in for the segmenter (``photo_mask_labels.png``)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(job.name).stem)
    source = SOURCES.get(getattr(job.result, "info", {}).get("coarse"))
    if source and name.startswith("segmenter"):
        name = source + name[len("segmenter") :]
    return f"{stem}_{name}"


def job_routes(queue: JobQueue) -> list[Route]:
    """``GET /api/jobs/ID`` (its state; when done timings, info and files), ``DELETE
    /api/jobs/ID`` (cancel it), ``GET /api/jobs/ID/files/NAME`` and ``GET
    /api/jobs/ID/zoom``."""

    async def job_status(request: Request) -> Response:
        job = queue.get(request.path_params["job"])
        if job is None:
            return error("no such job (the server keeps only the newest ones)", 404)
        body = job.status()
        if job.state == "done":
            body["timings"] = {k: round(v, 4) for k, v in job.result.timings.items()}
            body["info"] = job.result.info
            body["files"] = {n: f"/api/jobs/{job.id}/files/{n}" for n in job.result.files}
        return JSONResponse(body)

    async def cancel(request: Request) -> Response:
        job = queue.cancel(request.path_params["job"])
        if job is None:
            return error("no such job (the server keeps only the newest ones)", 404)
        if job.state in ("done", "error"):
            return error(f"the job has already ended ({job.state})", 409)
        return JSONResponse(job.status())  # cancelled, or running until its next step

    async def job_file(request: Request) -> Response:
        job = queue.get(request.path_params["job"])
        name = request.path_params["name"]
        if job is None or job.state != "done" or name not in job.result.files:
            return error("no such file", 404)
        data, mime = job.result.files[name]
        headers = {}
        if request.query_params.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="{_download_name(job, name)}"'
        return Response(data, media_type=mime, headers=headers)

    async def job_zoom(request: Request) -> Response:
        job = queue.get(request.path_params["job"])
        if job is None or job.state != "done" or "image" not in job.result.arrays:
            return error("no such result to zoom into", 404)
        try:
            q = request.query_params
            png = await run_in_threadpool(
                zoom_view,
                job.result,
                int(q.get("x", "")),
                int(q.get("y", "")),
                int(q.get("side", "64")),
            )
        except InputError as err:
            return refuse(err)
        except ValueError:
            return error("zoom needs integer x, y and side")
        return Response(png, media_type="image/png")

    return [
        Route("/api/jobs/{job}", job_status, methods=["GET"]),
        Route("/api/jobs/{job}", cancel, methods=["DELETE"]),
        Route("/api/jobs/{job}/files/{name}", job_file),
        Route("/api/jobs/{job}/zoom", job_zoom),
    ]
