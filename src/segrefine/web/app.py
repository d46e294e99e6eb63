"""The local web app: one page (``static/``) and a small JSON API, served by Starlette.

Endpoints (all under ``/api``; errors are ``{"error": "one line"}`` with status 400/404, and
403 / 413 / 429 for another site's request, a body over the limit and a full queue; see
``security.py`` for what the server trusts):

``GET  /api/runs``                 segmenter and refiner runs under ``--runs``, plus notes
``GET  /api/examples``             examples: the runs' own (``/api/example?id=run:RUN:FILE``)
                                   and the bundled synthetic ones (``/api/examples/N.png``)
``POST /api/segment``              form: ``file`` or ``example``, ``segmenter`` (or ``mask``: a
                                   mask to refine, or ``box``: JSON ``{"x", "y", "w", "h",
                                   "label"}`` in image pixels, GrabCut's mask in it refined),
                                   ``refiner``
                                   (empty = none), ``steps``, ``strength``, ``samples``,
                                   ``flip`` (1 = mirror half of the samples) -> job id
``POST /api/cluster``              form: ``file`` or ``example``, ``scribbles`` (JSON strokes),
                                   ``min_labels``, ``max_iter``, ``connected`` -> job id
``GET  /api/attention``            whether an attention model (``serve --attention-model``) is
                                   loaded: ``{"available", "model"}``; also ``attention`` in
                                   ``/api/runs``
``POST /api/attention``            form: ``file`` or ``example``, ``classes`` (comma-separated,
                                   at most 20 names of at most 40 characters), ``threshold``
                                   (0-1, optional) -> job id; 404 without an attention model
``GET  /api/jobs/ID``              state, stage, fraction, error; when done timings, info, files
``GET  /api/jobs/ID/files/NAME``   a result file (``?download=1`` as an attachment)
``GET  /api/jobs/ID/zoom?x&y&side`` a full-resolution close-up of a segment job: image,
                                   segmenter and refined side by side (PNG)

Uploads are decoded in the request, so a bad file is answered at once; the work runs in a
single background worker (:class:`~segrefine.web.jobs.JobQueue`) and the page polls for it.
"""

from __future__ import annotations

import contextlib
import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import quote

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import InputError
from ..pipeline import check_pair
from .inputs import (
    DEFAULT_MAX_MEGAPIXELS,
    decode_mask,
    decode_upload,
    parse_box,
    parse_classes,
    parse_json_field,
)
from .jobs import JobQueue, QueueFull
from .pipeline import (
    attention_figures,
    cluster_figures,
    mask_class_names,
    png_bytes,
    segment_and_refine,
    zoom_view,
)
from .runs import ModelCache, scan_runs
from .security import Guard, default_hosts

__all__ = ["EXAMPLE_SEEDS", "create_app"]

STATIC = Path(__file__).parent / "static"
MAX_SCRIBBLE_CHARS = 1_000_000
EXAMPLE_SEEDS = (3, 7, 12, 21)


@lru_cache(maxsize=len(EXAMPLE_SEEDS))
def _example(i: int) -> np.ndarray:
    from ..data.synthetic import generate_scene

    return generate_scene(EXAMPLE_SEEDS[i], size=128)[0]


def _decoding(fn, name: str, max_megapixels: float):
    """``fn`` taking the encoded image in place of the decoded one."""

    def run(data: bytes, *args, **kwargs):
        return fn(decode_upload(data, name, max_megapixels), *args, **kwargs)

    return run


# the coarse input's files are named after where it came from: "segmenter" only for one
SOURCES = {"mask": "mask", "box": "grabcut"}


def _download_name(job, name: str) -> str:
    """``<input's stem>_<file>``, with ``segmenter`` in a file's name replaced by its source
    when the user's mask or box stood in for the segmenter (``photo_mask_labels.png``)."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(job.name).stem)
    source = SOURCES.get(getattr(job.result, "info", {}).get("coarse"))
    if source and name.startswith("segmenter"):
        name = source + name[len("segmenter"):]
    return f"{stem}_{name}"


def _error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _number(form, name: str, kind, lo, hi, default=None):
    raw = form.get(name)
    if raw in (None, ""):
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InputError(f"{name} must be a number, got {raw!r}") from None
    if not lo <= value <= hi:
        raise InputError(f"{name} must be between {lo} and {hi}, got {value}")
    return value


def _lifespan(queue: JobQueue):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        queue.shutdown()

    return lifespan


def create_app(
    runs: str | Path | None = "runs",
    max_megapixels: float = DEFAULT_MAX_MEGAPIXELS,
    device: str = "cpu",
    allowed_hosts: set[str] | None = None,
    max_upload_mb: float = 64.0,
    max_pending: int = 8,
    attention_model=None,
):
    """The web app for the runs under ``runs``: uploads over ``max_megapixels`` or request
    bodies over ``max_upload_mb`` are refused, only ``allowed_hosts`` are answered (default:
    the loopback names) and at most ``max_pending`` jobs wait or run (see ``security.py``).
    ``attention_model``, a loaded :class:`~segrefine.attention.AttentionModel` or the path of
    a Stable Diffusion folder (loaded here, on ``device``), enables the attention tab."""
    runs = Path(runs) if runs is not None else None  # None: the zoo alone
    if isinstance(attention_model, (str, Path)):
        from ..attention import load_attention_model

        attention_model = load_attention_model(attention_model, device=device)
    attention_name = (Path(attention_model.path).name if getattr(attention_model, "path", None)
                      else "attention model") if attention_model is not None else None  # fmt: skip
    queue = JobQueue(max_pending=max_pending)
    cache = ModelCache(scan_runs(runs), device=device)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def list_runs(request: Request) -> Response:
        cache.index = scan_runs(runs)  # cheap; picks up runs trained while serving
        return JSONResponse({**cache.index.as_json(), "max_megapixels": max_megapixels,
                             "attention": attention_model is not None})  # fmt: skip

    async def attention_status(request: Request) -> Response:
        return JSONResponse({"available": attention_model is not None, "model": attention_name})

    async def list_examples(request: Request) -> Response:
        synthetic = [{"id": str(i), "name": f"synthetic scene {seed}",
                      "url": f"/api/examples/{i}.png"} for i, seed in enumerate(EXAMPLE_SEEDS)]
        from_runs = [{**ex, "url": f"/api/example?id={quote(ex['id'])}"}
                     for ex in cache.index.examples()]  # fmt: skip
        return JSONResponse(from_runs + synthetic)

    async def run_example(request: Request) -> Response:
        try:
            path = cache.index.example_path(request.query_params.get("id", ""))
        except InputError as err:
            return _error(err.message, 404)
        return FileResponse(path, media_type="image/jpeg")

    async def example_png(request: Request) -> Response:
        i = request.path_params["i"]
        if not 0 <= i < len(EXAMPLE_SEEDS):
            return _error(f"no example {i}", 404)
        return Response(png_bytes(_example(i)), media_type="image/png")

    async def _image(form) -> tuple[np.ndarray, str, bytes | None]:
        """The request's image, its name and, for an upload, its encoded bytes."""
        upload = form.get("file")
        if upload is not None and not isinstance(upload, str) and upload.filename:
            data = await upload.read()
            # decoding takes seconds for a large image: never on the event loop
            image = await run_in_threadpool(decode_upload, data, upload.filename, max_megapixels)
            return image, upload.filename, data
        example = form.get("example")
        if isinstance(example, str) and example.startswith("run:"):
            path = cache.index.example_path(example)  # only a file a run lists
            data = await run_in_threadpool(path.read_bytes)
            image = await run_in_threadpool(decode_upload, data, path.name, max_megapixels)
            return image, path.name, data
        if example not in (None, ""):
            i = _number(form, "example", int, 0, len(EXAMPLE_SEEDS) - 1)
            return _example(i), f"example{i}.png", None
        raise InputError("choose an image to upload or one of the examples")

    async def segment(request: Request) -> Response:
        try:
            form = await request.form()
            image, name, data = await _image(form)
            steps = _number(form, "steps", int, 1, 1000)
            strength = _number(form, "strength", float, 0.01, 1.0)
            samples = _number(form, "samples", int, 1, 32)
            flip = True if form.get("flip") in ("1", "true", "on") else None
            seg_name = form.get("segmenter") or ""
            ref_name = form.get("refiner") or ""
            upload = form.get("mask")
            mask = box = input_size = None
            raw_box = form.get("box")
            if isinstance(raw_box, str) and raw_box.strip():
                # "from a box": GrabCut's mask in the user's box replaces the segmenter
                if upload is not None and not isinstance(upload, str) and upload.filename:
                    raise InputError("send a box or a mask to refine, not both")
                if not ref_name:
                    raise InputError("choose a refiner run to refine the mask from your box")
                box = parse_box(raw_box, image.shape[:2], cache.get("refiner", ref_name))
            elif raw_box is not None and not isinstance(raw_box, str):
                raise InputError("box must be a form field, not a file")
            elif upload is not None and not isinstance(upload, str) and upload.filename:
                # "refine my mask": the uploaded mask replaces the segmenter
                # (its own name: ``data`` is the image's, decoded again in the job)
                if not ref_name:
                    raise InputError("choose a refiner run to refine your mask")
                mask_data = await upload.read()
                mask = await run_in_threadpool(decode_mask, mask_data, upload.filename,
                                               image.shape[:2],
                                               cache.get("refiner", ref_name))  # fmt: skip
                # the short side an upsampled mask was predicted at (refine --input-size)
                input_size = _number(form, "input_size", int, 1, min(image.shape[:2]))
            elif not seg_name:
                raise InputError("choose a segmenter run")
            own = mask is not None or box is not None  # no segmenter then
            # load now so a broken run is reported at once (and cached for the job)
            segmenter = cache.get("segmenter", seg_name) if not own else None
            refiner = cache.get("refiner", ref_name) if ref_name else None
            if refiner is not None:  # a mismatched pair or bad settings: an error now
                if not own:
                    check_pair(segmenter, refiner)
                elif mask is not None:
                    mask_class_names(mask, refiner)
                refiner.settings(steps, strength, samples, flip)
        except InputError as err:
            return _error(str(err))
        return _submit("segment", name, segment_and_refine, (image, data), segmenter, refiner,
                       steps=steps, strength=strength, samples=samples, flip=flip, mask=mask,
                       box=box, input_size=input_size)

    async def cluster(request: Request) -> Response:
        try:
            form = await request.form()
            image, name, data = await _image(form)
            min_labels = _number(form, "min_labels", int, 1, 100, default=3)
            max_iter = _number(form, "max_iter", int, 1, 1000, default=30)
            connected = form.get("connected") in ("1", "true", "on")
            strokes = parse_json_field(form.get("scribbles") or "[]", "scribbles",
                                       MAX_SCRIBBLE_CHARS)  # fmt: skip
            if not isinstance(strokes, list):
                raise InputError("scribbles must be a list of strokes")
        except InputError as err:
            return _error(str(err))
        return _submit("cluster", name, cluster_figures, (image, data), strokes,
                       min_labels=min_labels, max_iter=max_iter, connected=connected)

    async def attention(request: Request) -> Response:
        if attention_model is None:
            return _error("no attention model on this server (start it with segrefine serve "
                          "--attention-model DIR)", 404)  # fmt: skip
        try:
            form = await request.form()
            classes = parse_classes(form.get("classes"))
            attention_model.check_prompt(classes)  # a prompt too long is a 400, not a job error
            threshold = _number(form, "threshold", float, 0.0, 1.0)
            image, name, data = await _image(form)
        except InputError as err:
            return _error(str(err))
        return _submit("attention", name, attention_figures, (image, data), attention_model,
                       classes, threshold=threshold)

    def _submit(kind, name, fn, source: tuple[np.ndarray, bytes | None], *args,
                **kwargs) -> Response:  # fmt: skip
        image, data = source
        if data is not None:
            # a waiting job keeps the upload as it came (a 16 MP photo: a few MB encoded,
            # 48 MB decoded) and decodes it again when it starts
            fn, image = _decoding(fn, name, max_megapixels), data
        try:
            job = queue.submit(kind, name, fn, image, *args, **kwargs)
        except QueueFull as err:
            return _error(str(err), 429)
        return JSONResponse({"job": job.id})

    async def job_status(request: Request) -> Response:
        job = queue.get(request.path_params["job"])
        if job is None:
            return _error("no such job (the server keeps only the newest ones)", 404)
        body = job.status()
        if job.state == "done":
            body["timings"] = {k: round(v, 4) for k, v in job.result.timings.items()}
            body["info"] = job.result.info
            body["files"] = {n: f"/api/jobs/{job.id}/files/{n}" for n in job.result.files}
        return JSONResponse(body)

    async def job_file(request: Request) -> Response:
        job = queue.get(request.path_params["job"])
        name = request.path_params["name"]
        if job is None or job.state != "done" or name not in job.result.files:
            return _error("no such file", 404)
        data, mime = job.result.files[name]
        headers = {}
        if request.query_params.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="{_download_name(job, name)}"'
        return Response(data, media_type=mime, headers=headers)

    async def job_zoom(request: Request) -> Response:
        job = queue.get(request.path_params["job"])
        if job is None or job.state != "done" or "image" not in job.result.arrays:
            return _error("no such result to zoom into", 404)
        try:
            q = request.query_params
            png = await run_in_threadpool(zoom_view, job.result, int(q.get("x", "")),
                                          int(q.get("y", "")), int(q.get("side", "64")))
        except ValueError as err:  # InputError is a ValueError: one line either way
            return _error(str(err) if isinstance(err, InputError) else
                          "zoom needs integer x, y and side")  # fmt: skip
        return Response(png, media_type="image/png")

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/api/runs", list_runs),
            Route("/api/examples", list_examples),
            Route("/api/examples/{i:int}.png", example_png),
            Route("/api/example", run_example),
            Route("/api/segment", segment, methods=["POST"]),
            Route("/api/cluster", cluster, methods=["POST"]),
            Route("/api/attention", attention_status, methods=["GET"]),
            Route("/api/attention", attention, methods=["POST"]),
            Route("/api/jobs/{job}", job_status),
            Route("/api/jobs/{job}/files/{name}", job_file),
            Route("/api/jobs/{job}/zoom", job_zoom),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=_lifespan(queue),
    )
    app.state.queue = queue
    app.state.cache = cache
    app.state.attention = attention_model
    return Guard(app, allowed_hosts or default_hosts("127.0.0.1"), int(max_upload_mb * 1e6))


def serve(runs: str | Path | None = "runs", host: str = "127.0.0.1", port: int = 7860,
          max_megapixels: float = DEFAULT_MAX_MEGAPIXELS, device: str = "cpu",
          allow_hosts: tuple[str, ...] = (), max_upload_mb: float = 64.0,
          max_pending: int = 8, attention_model=None) -> None:  # fmt: skip
    """Run the app with uvicorn until interrupted (``attention_model``: a loaded model or a
    Stable Diffusion folder for the attention tab, or None for no tab)."""
    import uvicorn

    hosts = default_hosts(host) | {h.lower() for h in allow_hosts}
    app = create_app(runs, max_megapixels, device, hosts, max_upload_mb, max_pending,
                     attention_model=attention_model)  # fmt: skip
    note = "" if attention_model is None else "; attention tab on"
    shown = Path(runs).resolve() if runs is not None else "the zoo alone"
    print(f"segrefine web app on http://{host}:{port}  (runs: {shown}; "
          f"answers to {', '.join(sorted(hosts))}{note})")
    uvicorn.run(app, host=host, port=port, log_level="warning")
