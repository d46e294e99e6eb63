"""What the web app does to an uploaded image, free of any web framework.

Every function here takes and returns plain arrays or bytes, so the page's behaviour is tested
without a browser: segment + refine with per-stage timings (from a segmenter, an uploaded mask
or a box), the attention tab, and clustering with the browser's scribbles. What a request sends
is checked in :mod:`.inputs` (names re-exported here), the figures are drawn in
:mod:`.figures`, the scribbles rasterised in :mod:`.scribbles`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from ..benchmarking.report import colorize
from ..data.coarse import Coarse
from ..data.datasets import resize_image, resize_mask
from ..data.io import VOC_PALETTE, VOID
from ..diffusion.onehot import prior_for_image
from ..errors import InputError
from ..pipeline import check_pair
from ..pipeline import segment_and_refine as run_pipeline
from ..weak.annotations import Box
from .figures import (
    Figures,
    display_size,
    instances,
    layer,
    npy_bytes,
    overlay,
    png_bytes,
    uncertainty_image,
    zoom_view,
)
from .fullsize import label_map_and_file
from .inputs import (
    DEFAULT_MAX_MEGAPIXELS,
    decode_mask,
    decode_upload,
    mask_from_box,
    parse_box,
    parse_classes,
    parse_json_field,
)
from .scribbles import rasterize_scribbles

__all__ = [
    "DEFAULT_MAX_MEGAPIXELS",
    "attention_figures",
    "parse_classes",
    "Figures",
    "decode_mask",
    "decode_upload",
    "parse_json_field",
    "mask_class_names",
    "mask_from_box",
    "parse_box",
    "display_size",
    "instances",
    "overlay",
    "png_bytes",
    "npy_bytes",
    "rasterize_scribbles",
    "segment_and_refine",
    "cluster_figures",
    "uncertainty_image",
    "zoom_view",
]

Progress = Callable[[str, float], None]


def segment_and_refine(
    image: np.ndarray,
    segmenter,
    refiner=None,
    steps: int | None = None,
    strength: float | None = None,
    samples: int | None = None,
    flip: bool | None = None,
    seed: int = 0,
    progress: Progress | None = None,
    mask: Coarse | None = None,
    box: Box | None = None,
    input_size: int | None = None,
) -> Figures:
    """Segment ``image`` (and refine the result when a refiner is given), timing each stage;
    with a ``mask`` (an upload as :func:`decode_mask` reads it, at most the image's size)
    instead of a segmenter, refine that;
    with a ``box``, refine the mask GrabCut makes in it (:func:`mask_from_box`).
    ``input_size``: the short side an uploaded ``mask`` was predicted at, when it was
    upsampled to the image's size (``refine --input-size``).

    Files produced (name -> PNG/NPY bytes): ``input.png``, ``segmenter.png`` (overlay),
    ``segmenter_layer.png`` (the label colours alone, transparent background),
    ``segmenter_instances.png``, ``segmenter_labels.png`` (VOC-palette label map at the
    image's size), ``segmenter_probs.npy`` (float16 C x H x W); with a refiner also
    ``refined.png``, ``refined_instances.png``, ``refined_labels.png``, ``refined_probs.npy``
    and ``uncertainty.png`` / ``uncertainty.npy``.
    """
    report = progress or (lambda stage, fraction: None)
    out = Figures()
    if box is not None:  # the user's box: GrabCut makes the mask, refined like an upload
        report("GrabCut in your box", 0.05)
        t0 = time.perf_counter()
        mask = Coarse(labels=mask_from_box(image, box))
        out.timings["grabcut_s"] = time.perf_counter() - t0
    if mask is not None:  # the user's own mask is the coarse input
        names = mask_class_names(mask, refiner)
        # at the mask's own size: the full-size files are made from it a strip at a time
        coarse_probs = prior_for_image(mask.shape, len(names), mask.probs, mask.labels)
        coarse_input = {"labels": [mask], "input_size": input_size}
        out.info["coarse"] = "mask"
        if mask.note:  # how the upload was read (a two-valued or soft mask, a cutout)
            out.info["mask_note"] = f"your mask was read as {mask.note}"
        if mask.is_empty():
            out.info["mask_note"] = "your mask holds one class only: nothing to refine around"
        if box is not None:
            out.info["coarse"] = "box"
            out.info["box"] = {"x": box.x, "y": box.y, "w": box.w, "h": box.h,
                               "label": box.label}  # fmt: skip
    else:
        names = tuple(segmenter.class_names)
        if refiner is not None:
            check_pair(segmenter, refiner)
        report("segmenting", 0.1)
        t0 = time.perf_counter()
        coarse_probs = _segment(image, segmenter)
        out.timings["segment_s"] = time.perf_counter() - t0
        # the refiner upsamples them to the image as the files below do, with the size they
        # were predicted at: no full-size map is held for it while the refiner works
        coarse_input = {"probs": [coarse_probs], "input_size": segmenter.size}
        out.info["coarse"] = "segmenter"
    coarse_labels = _add_label_files(out, "segmenter", image, coarse_probs, names)
    del coarse_probs  # a mask's may be full-size: the refiner makes its own from the mask
    out.arrays.update(image=image, segmenter=coarse_labels)
    if refiner is not None:
        report("refining", 0.4)
        (result,) = run_pipeline([image], refiner=refiner, steps=steps, strength=strength,
                                 samples=samples, flip=flip, seed=seed, timings=out.timings,
                                 **coarse_input)  # fmt: skip
        ref = result.refined
        del result, coarse_input
        _add_label_files(out, "refined", image, ref.probs, names, ref.labels)
        out.arrays["refined"] = ref.labels
        out.files["uncertainty.png"] = (png_bytes(uncertainty_image(ref.uncertainty)), "image/png")
        out.files["uncertainty.npy"] = (npy_bytes(ref.uncertainty.astype(np.float16)),
                                        "application/octet-stream")  # fmt: skip
        changed = float((ref.labels != coarse_labels).mean())
        out.info.update(nfe=ref.nfe, changed_fraction=changed,
                        mean_uncertainty=float(ref.uncertainty.mean()))  # fmt: skip
    report("drawing", 0.9)
    out.files["input.png"] = (png_bytes(resize_image(image, display_size(image.shape[:2]))),
                              "image/png")  # fmt: skip
    out.info.update(classes=list(names), width=int(image.shape[1]), height=int(image.shape[0]))
    return out


def mask_class_names(mask: Coarse, refiner) -> tuple[str, ...]:
    """Class names for an uploaded mask: the refiner's, or for a class-agnostic refiner
    background / object for two classes and background / class 1 / ... for more. Ids the
    refiner does not know are an input error."""
    if mask.probs is not None:
        return tuple(refiner.class_names) if len(mask.probs) == refiner.num_classes else (
            "background", *(f"class {k}" for k in range(1, len(mask.probs))))
    top = int(mask.labels[mask.labels != VOID].max(initial=0))
    if not refiner.spec.class_agnostic:
        if top >= refiner.num_classes:
            raise InputError(f"mask has class id {top} but the refiner knows "
                             f"{refiner.num_classes} classes")  # fmt: skip
        return tuple(refiner.class_names)
    if top <= 1:
        return tuple(refiner.class_names)
    return ("background", *(f"class {k}" for k in range(1, top + 1)))


def _segment(image: np.ndarray, segmenter) -> np.ndarray:
    """The segmenter's probabilities (C, h, w) at its working size, or at the image's size
    when that is smaller (the image is then segmented larger and the maps shrunk back)."""
    shape = segmenter.working_size(image.shape[:2])
    if shape[0] > image.shape[0] or shape[1] > image.shape[1]:
        (coarse,) = run_pipeline([image], segmenter)
        return coarse.probs
    (coarse,) = run_pipeline([resize_image(image, shape)], segmenter)  # as predict resizes
    return coarse.probs


def _add_label_files(out: Figures, prefix: str, image, probs, names, labels=None) -> np.ndarray:
    """The files of one stage's result, from its probabilities at the image's size or
    smaller (:mod:`.fullsize`); its labels when given, else theirs. Returns the label map."""
    labels, npy, shares = label_map_and_file(probs, image.shape[:2], labels)
    out.files[f"{prefix}_probs.npy"] = (npy, "application/octet-stream")
    clear = names.index("background") if "background" in names else None
    out.files[f"{prefix}.png"] = (png_bytes(overlay(image, labels, clear)), "image/png")
    out.files[f"{prefix}_layer.png"] = (png_bytes(layer(labels, clear)), "image/png")
    fig, rows = instances(image, labels, names)
    out.files[f"{prefix}_instances.png"] = (png_bytes(fig), "image/png")
    out.files[f"{prefix}_labels.png"] = (png_bytes(labels, palette=VOC_PALETTE), "image/png")
    out.info[f"{prefix}_instances"] = rows
    out.info[f"{prefix}_class_fractions"] = {n: float(shares[c]) for c, n in enumerate(names)}
    return labels


def attention_figures(
    image: np.ndarray,
    model,
    classes: list[str],
    threshold: float | None = None,
    progress: Progress | None = None,
) -> Figures:
    """The attention tab: ``model.segment`` (an :class:`~segrefine.attention.AttentionModel`,
    no training) on ``image`` for ``classes``.

    Files: ``input.png``, ``attention.png`` (the labels over the image, VOC colours),
    ``attention_labels.png`` (VOC-palette label map at the image's size) and
    ``attention_probs.npy`` (float16 K x H x W); ``info.classes`` are the result's class
    names (``background`` first when it was added).
    """
    report = progress or (lambda stage, fraction: None)
    out = Figures()
    report("attention: one U-Net pass", 0.1)
    t0 = time.perf_counter()
    kwargs = {} if threshold is None else {"threshold": threshold}
    result = model.segment(image, list(classes), **kwargs)
    out.timings["attention_s"] = time.perf_counter() - t0
    report("drawing", 0.9)
    names = tuple(result.class_names)
    lowered = [n.lower() for n in names]
    clear = lowered.index("background") if "background" in lowered else None
    labels = result.labels
    out.files["attention.png"] = (png_bytes(overlay(image, labels, clear)), "image/png")
    out.files["attention_labels.png"] = (png_bytes(labels, palette=VOC_PALETTE), "image/png")
    out.files["attention_probs.npy"] = (npy_bytes(result.probs.astype(np.float16)),
                                        "application/octet-stream")  # fmt: skip
    out.files["input.png"] = (png_bytes(resize_image(image, display_size(image.shape[:2]))),
                              "image/png")  # fmt: skip
    out.info.update(
        classes=list(names),
        class_fractions={n: float((labels == c).mean()) for c, n in enumerate(names)},
        width=int(image.shape[1]), height=int(image.shape[0]),
    )
    if threshold is not None:
        out.info["threshold"] = float(threshold)
    return out


def cluster_figures(
    image: np.ndarray,
    strokes: list[dict] | None = None,
    min_labels: int = 3,
    max_iter: int = 30,
    connected: bool = False,
    progress: Progress | None = None,
) -> Figures:
    """The unsupervised tab: :func:`~segrefine.unsupervised.cluster` on ``image``, guided by
    the browser's scribbles when there are any.

    Files: ``clusters.png`` (segments in the stable palette over the image), ``scribbles.png``
    (the strokes as the method received them, when given) and ``cluster_labels.png`` (16-bit
    segment ids at the image's size).
    """
    from ..unsupervised import ClusterConfig, cluster
    from ..unsupervised.output import colorize_segments

    report = progress or (lambda stage, fraction: None)
    scribbles = rasterize_scribbles(strokes, image.shape[:2]) if strokes else None
    marked = np.unique(scribbles[scribbles != 255]) if scribbles is not None else []
    if len(marked) == 0:
        scribbles = None
    cfg = ClusterConfig(min_labels=min_labels, max_iter=max_iter, connected=connected)
    out = Figures()
    report("clustering", 0.2)
    t0 = time.perf_counter()
    labels = cluster(image, scribbles=scribbles, config=cfg)
    out.timings["cluster_s"] = time.perf_counter() - t0
    report("drawing", 0.9)
    size = display_size(image.shape[:2])
    if scribbles is not None and not connected:  # segment k = scribble label k: same colour
        colour = colorize((labels.astype(np.int64) % 254) + 1)
    else:
        colour = colorize_segments(labels).astype(np.uint8)
    blend = (0.35 * image.astype(np.float32) + 0.65 * colour).round().astype(np.uint8)
    out.files["clusters.png"] = (png_bytes(resize_image(blend, size)), "image/png")
    out.files["input.png"] = (png_bytes(resize_image(image, size)), "image/png")
    out.files["cluster_labels.png"] = (png_bytes(labels.astype(np.uint16)), "image/png")
    if scribbles is not None:
        drawn = scribbles != 255
        sc = (image.astype(np.float32) * 0.5).astype(np.uint8)
        sc[drawn] = colorize((scribbles[drawn].astype(int) % 254) + 1)
        out.files["scribbles.png"] = (png_bytes(resize_mask(sc, size)), "image/png")
    # the legend: each segment's colour and share, largest first (64 at most)
    ids, first, counts = np.unique(labels.ravel(), return_index=True, return_counts=True)
    swatches = colour.reshape(-1, 3)[first]
    legend = [{"id": int(ids[k]), "colour": [int(v) for v in swatches[k]],
               "fraction": float(counts[k] / labels.size)}
              for k in np.argsort(-counts, kind="stable")[:64]]  # fmt: skip
    out.info.update(
        segments=int(len(ids)), legend=legend,
        scribble_labels=int(len(marked)),
        width=int(image.shape[1]), height=int(image.shape[0]),
    )
    return out
