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
``DELETE /api/jobs/ID``            cancel the job: a waiting one at once, a running one at its
                                   next step (409 once it has ended)
``GET  /api/jobs/ID/files/NAME``   a result file (``?download=1`` as an attachment)
``GET  /api/jobs/ID/zoom?x&y&side`` a full-resolution close-up of a segment job: image,
                                   segmenter and refined side by side (PNG)

Uploads, scribbles and settings are checked in the request, so a bad one is answered at once;
the work runs in a single background worker (:class:`~segrefine.web.jobs.JobQueue`, each job
at most ``job_timeout`` seconds) and the page polls for it. The job routes are in
``job_routes.py``, serving with uvicorn in ``server.py``.
"""

from __future__ import annotations

import contextlib
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
from .job_routes import job_routes
from .jobs import DEFAULT_TIMEOUT, JobQueue, QueueFull
from .pipeline import (
    attention_figures,
    cluster_figures,
    mask_class_names,
    png_bytes,
    segment_and_refine,
)
from .replies import HANDLERS, error, refuse
from .runs import ModelCache, scan_runs
from .scribbles import check_scribbles
from .security import Guard, default_hosts

__all__ = ["EXAMPLE_SEEDS", "LIMITS", "create_app"]

STATIC = Path(__file__).parent / "static"
MAX_SCRIBBLE_CHARS = 1_000_000
EXAMPLE_SEEDS = (3, 7, 12, 21)
# the settings a request may ask for, as the page's fields offer them (static/index.html):
# 1000 steps x 32 samples held the single worker for 105 s on a 128 px image; the zoo's
# refiners take 1 step and 2 samples, a ddpm-like refiner a few dozen steps
LIMITS = {"steps": (1, 50), "samples": (1, 16), "strength": (0.01, 1.0),
          "min_labels": (1, 100), "max_iter": (1, 300)}  # fmt: skip


@lru_cache(maxsize=len(EXAMPLE_SEEDS))
def _example(i: int) -> np.ndarray:
    from ..data.synthetic import generate_scene

    return generate_scene(EXAMPLE_SEEDS[i], size=128)[0]


def _decoding(fn, name: str, max_megapixels: float):
    """``fn`` taking the encoded image in place of the decoded one."""

    def run(data: bytes, *args, **kwargs):
        return fn(decode_upload(data, name, max_megapixels), *args, **kwargs)

    return run


def _number(form, name: str, kind, lo=None, hi=None, default=None):
    """A form field as ``kind``, in ``LIMITS[name]`` unless ``lo`` and ``hi`` are given."""
    if lo is None:
        lo, hi = LIMITS[name]
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
    job_timeout: float | None = DEFAULT_TIMEOUT,
    backend: str = "torch",
):
    """The web app for the runs under ``runs``: uploads over ``max_megapixels`` or request
    bodies over ``max_upload_mb`` are refused, only ``allowed_hosts`` are answered (default:
    the loopback names), at most ``max_pending`` jobs wait or run and each runs at most
    ``job_timeout`` seconds (see ``security.py``).
    ``attention_model``, a loaded :class:`~segrefine.attention.AttentionModel` or the path of
    a Stable Diffusion folder (loaded here, on ``device``), enables the attention tab."""
    runs = Path(runs) if runs is not None else None  # None: the zoo alone
    if isinstance(attention_model, (str, Path)):
        from ..attention import load_attention_model

        attention_model = load_attention_model(attention_model, device=device)
    attention_name = (Path(attention_model.path).name if getattr(attention_model, "path", None)
                      else "attention model") if attention_model is not None else None  # fmt: skip
    queue = JobQueue(max_pending=max_pending, timeout=job_timeout)
    cache = ModelCache(scan_runs(runs), device=device, backend=backend)

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html")

    async def list_runs(request: Request) -> Response:
        cache.index = scan_runs(runs)  # cheap; picks up runs trained while serving
        return JSONResponse({**cache.index.as_json(), "max_megapixels": max_megapixels,
                             "attention": attention_model is not None})  # fmt: skip

    async def attention_status(request: Request) -> Response:
        return JSONResponse({"available": attention_model is not None, "model": attention_name})

    async def list_examples(request: Request) -> Response:
        synthetic = [
            {"id": str(i), "name": f"synthetic scene {seed}", "url": f"/api/examples/{i}.png"}
            for i, seed in enumerate(EXAMPLE_SEEDS)
        ]
        from_runs = [{**ex, "url": f"/api/example?id={quote(ex['id'])}"}
                     for ex in cache.index.examples()]  # fmt: skip
        return JSONResponse(from_runs + synthetic)

    async def run_example(request: Request) -> Response:
        try:
            path = cache.index.example_path(request.query_params.get("id", ""))
        except InputError as err:
            return refuse(err, 404)
        return FileResponse(path, media_type="image/jpeg")

    async def example_png(request: Request) -> Response:
        i = request.path_params["i"]
        if not 0 <= i < len(EXAMPLE_SEEDS):
            return error(f"no example {i}", 404)
        return Response(png_bytes(_example(i)), media_type="image/png")

    async def _image(form) -> tuple[np.ndarray, str, bytes | None]:
        """The request's image, its name and, for an upload, its encoded bytes."""
        upload = form.get("file")
        if upload is not None and not isinstance(upload, str) and upload.filename:
            # the body's one copy in memory (the form spooled it to disk); refused, it goes
            # with the request (replies.refuse frees it from the error's traceback)
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
        async with request.form() as form:  # its spooled files are closed when done
            return await _segment(form)

    async def _segment(form) -> Response:
        try:
            image, name, data = await _image(form)
            steps = _number(form, "steps", int)
            strength = _number(form, "strength", float)
            samples = _number(form, "samples", int)
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
            return refuse(err)
        return _submit(
            "segment",
            name,
            segment_and_refine,
            (image, data),
            segmenter,
            refiner,
            steps=steps,
            strength=strength,
            samples=samples,
            flip=flip,
            mask=mask,
            box=box,
            input_size=input_size,
        )

    async def cluster(request: Request) -> Response:
        async with request.form() as form:
            return await _cluster(form)

    async def _cluster(form) -> Response:
        try:
            image, name, data = await _image(form)
            min_labels = _number(form, "min_labels", int, default=3)
            max_iter = _number(form, "max_iter", int, default=30)
            connected = form.get("connected") in ("1", "true", "on")
            raw = form.get("scribbles") or "[]"
            if not isinstance(raw, str):
                raise InputError("scribbles must be a form field, not a file")
            strokes = parse_json_field(raw, "scribbles", MAX_SCRIBBLE_CHARS)
            # the strokes' points against the image now: a bad stroke is a 400, not a job
            # that fails once it starts
            check_scribbles(strokes, image.shape[:2])
        except InputError as err:
            return refuse(err)
        return _submit(
            "cluster",
            name,
            cluster_figures,
            (image, data),
            strokes,
            min_labels=min_labels,
            max_iter=max_iter,
            connected=connected,
        )

    async def attention(request: Request) -> Response:
        if attention_model is None:
            return error("no attention model on this server (start it with segrefine serve "
                         "--attention-model DIR)", 404)  # fmt: skip
        async with request.form() as form:
            return await _attention(form)

    async def _attention(form) -> Response:
        try:
            classes = parse_classes(form.get("classes"))
            attention_model.check_prompt(classes)  # a prompt too long is a 400, not a job error
            threshold = _number(form, "threshold", float, 0.0, 1.0)
            image, name, data = await _image(form)
        except InputError as err:
            return refuse(err)
        return _submit(
            "attention",
            name,
            attention_figures,
            (image, data),
            attention_model,
            classes,
            threshold=threshold,
        )

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
            return error(str(err), 429)
        return JSONResponse({"job": job.id})

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
            *job_routes(queue),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers=HANDLERS,  # Starlette's own refusals as {"error": ...} too
        lifespan=_lifespan(queue),
    )
    app.state.queue = queue
    app.state.cache = cache
    app.state.attention = attention_model
    return Guard(app, allowed_hosts or default_hosts("127.0.0.1"), int(max_upload_mb * 1e6))
