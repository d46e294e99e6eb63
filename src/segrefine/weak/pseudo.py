"""Write a dataset of pseudo-masks that ``train-segmenter`` trains on unchanged.

``write_pseudo_dataset`` reads a split of a dataset root (either layout), makes a pseudo-mask
per image from cheap labels -- boxes (:mod:`.boxes`) or image tags (:mod:`.tags`) -- and
writes a new root in the folder layout:

* ``images/<split>/<id>.png`` and ``masks/<split>/<id>.png`` (the pseudo-masks, VOC palette,
  255 = void where unsure);
* the validation split copied with its *real* masks when it has them, so training is
  validated against the truth as usual;
* ``classes.txt``; ``pseudo.json`` (settings, timing and, when the split has real masks, how
  good the pseudo-masks are); ``boxes.json`` or ``tags.txt`` (the labels used, simulated or
  read, in the form the command reads).

The new root is written beside its final place and renamed into it, so an interrupted run
leaves nothing half-written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.datasets import load_split
from ..data.io import VOID, list_images, read_image, write_image, write_json, write_label_png
from ..errors import InputError
from ..metrics import SegmentationScores
from ..segmenting.train import TrainConfig
from .annotations import boxes_from_mask, boxes_to_json, read_boxes, read_tags, tags_from_mask
from .boxes import METHODS, pseudo_mask_from_boxes
from .rounds import allowed_classes, one_round
from .scribbles import pseudo_mask_from_scribbles, read_scribbles, scribbles_from_mask
from .tags import TAG_METHODS, TagSettings, class_maps, pseudo_mask_from_tags, train_classifier


def pseudo_mask_quality(pseudo: list[np.ndarray], truth: list[np.ndarray],
                        class_names) -> dict:  # fmt: skip
    """Pseudo-masks scored against the real masks on the pixels they label (void pseudo
    pixels are left out, as training leaves them out), in percent, with the share of pixels
    left void."""
    scores = SegmentationScores(len(class_names), class_names)
    void = 0.0
    for p, t in zip(pseudo, truth, strict=True):
        void += float((p == VOID).mean())
        scores.update(np.where(p == VOID, 0, p), np.where(p == VOID, VOID, t))
    s = scores.summary()
    return {"mean_image_iou": round(s["mean_image_iou"], 2), "miou": round(s["miou"], 2),
            "boundary_iou": round(s["boundary_iou"], 2),
            "void_share": round(100 * void / max(len(pseudo), 1), 2)}  # fmt: skip


SOURCES = ("boxes", "tags", "scribbles", "attention")


def write_pseudo_dataset(
    data: str | Path,
    out: str | Path,
    source: str = "boxes",
    boxes: str | Path | None = None,
    simulate: bool = False,
    method: str = "grabcut",
    classes: list[str] | None = None,
    split: str = "train",
    val_split: str | None = "val",
    progress: bool = True,
    tags: str | Path | None = None,
    negatives: str | Path | None = None,
    tag_settings: TagSettings | None = None,
    attention_model: str | Path | None = None,
    scribbles: str | Path | None = None,
    rounds: int = 0,
    round_epochs: int = 20,
    round_settings: dict | None = None,
    device: str = "cpu",
    fit_layer_weights: bool = False,
) -> dict:
    """Pseudo-masks for ``split`` of ``data`` from ``source`` labels, written as a new root
    ``out``: ``boxes`` (a boxes file) or ``tags`` (a tags file, plus ``negatives``, a folder
    of images showing none of the classes), or with ``simulate`` either derived from the real
    masks. With ``rounds``, segmenters trained out-of-fold on the pseudo-masks re-make them
    that many times (:mod:`.rounds`; a U-Net at 128 px by default, ``round_settings`` override
    its ``TrainConfig`` fields). With ``source`` attention, ``fit_layer_weights`` is
    StableSeg++ (the cross-attention layers weighted by a fit on StableSeg+'s pseudo-masks,
    saved as ``layer_weights.json``). Returns what ``pseudo.json`` holds."""
    if not 0 <= rounds <= 10 or round_epochs < 1:
        raise InputError(f"--rounds must be in 0..10 and --round-epochs positive, got {rounds} "
                         f"and {round_epochs}")  # fmt: skip
    if source not in SOURCES:
        raise InputError(f"--from must be one of {', '.join(SOURCES)}, got {source!r}")
    if fit_layer_weights and source != "attention":
        raise InputError("--fit-layer-weights needs --from attention")
    if source == "boxes" and method not in METHODS:
        raise InputError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if source == "tags":
        if method not in TAG_METHODS:
            raise InputError(f"--method for tags must be one of {', '.join(TAG_METHODS)}, "
                             f"got {method!r}")  # fmt: skip
        tag_settings = tag_settings or TagSettings(method=method)
    given_file = {"boxes": boxes, "tags": tags, "scribbles": scribbles,
                  "attention": attention_model}[source]  # fmt: skip
    if source == "attention":  # StableSeg+: no labels at all, the class names are the prompt
        if attention_model is None:
            raise InputError("--from attention needs --attention-model DIR")
    elif simulate == (given_file is not None):
        raise InputError(f"give either a {source} file (--{source}) or --simulate-from-masks")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError("output exists and is not empty; pick another --out", out)
    train = load_split(data, split, classes, False, size=None, require_masks=simulate)
    names = train.class_names
    negative_images = [read_image(f) for f in list_images(negatives)] if negatives else []
    val = load_split(data, val_split, classes, False, size=None) if val_split else None
    # the time reported is all of it: the tag classifier's or layer weights' fitting included
    t0 = time.perf_counter()
    if source == "boxes":
        if simulate:
            given = {it.id: boxes_from_mask(it.mask) for it in train.items}
        else:
            given = read_boxes(boxes, names, {it.id: it.image.shape[:2] for it in train.items})

        def make(it):
            return pseudo_mask_from_boxes(it.image, given.get(it.id, []), method)
    elif source == "tags":
        given = ({it.id: tags_from_mask(it.mask) for it in train.items} if simulate
                 else read_tags(tags, names, [it.id for it in train.items]))  # fmt: skip
        make = _tag_maker(train, given, negative_images, tag_settings, progress)
    elif source == "scribbles":
        marks = {it.id: scribbles_from_mask(it.mask) if simulate
                 else read_scribbles(scribbles, it.id, it.image.shape[:2], len(names))
                 for it in train.items}  # every file checked before any work  # fmt: skip
        given = {i: set(np.unique(m[m != VOID]).tolist()) for i, m in marks.items()}

        def make(it):
            return pseudo_mask_from_scribbles(it.image, marks[it.id])
    else:
        given = {it.id: set(range(1, len(names))) for it in train.items}  # every class, any image
        make = _attention_maker(attention_model, names, device,
                                train.items if fit_layer_weights else None, progress)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        pseudo = []
        what = method if source == "boxes" else "tags"
        for it in tqdm(train.items, desc=f"pseudo-masks ({what})", disable=not progress,
                       leave=False):  # fmt: skip
            mask = make(it)
            pseudo.append(mask)
            write_image(tmp / "images" / split / f"{it.id}.png", it.image)
            write_label_png(tmp / "masks" / split / f"{it.id}.png", mask)
        seconds = time.perf_counter() - t0
        (tmp / "classes.txt").write_text("\n".join(names) + "\n")
        history = []
        if rounds:
            allowed = {it.id: allowed_classes(it.image.shape[:2], len(names),
                                              given.get(it.id) if source != "boxes" else None,
                                              given.get(it.id) if source == "boxes" else None)
                       for it in train.items}  # fmt: skip
            for r in range(rounds):
                cfg = TrainConfig(**{"data": str(tmp), "epochs": round_epochs, "seed": r,
                                     **(round_settings or {})})  # fmt: skip
                if train.items[0].mask is not None:
                    history.append(pseudo_mask_quality(pseudo, [it.mask for it in train.items],
                                                       names))  # fmt: skip
                pseudo = one_round(tmp, split, train.items, allowed, cfg, device=device)
                for it, mask in zip(train.items, pseudo, strict=True):
                    write_label_png(tmp / "masks" / split / f"{it.id}.png", mask)
            seconds = time.perf_counter() - t0
        for it in val.items if val else []:
            write_image(tmp / "images" / val_split / f"{it.id}.png", it.image)
            write_label_png(tmp / "masks" / val_split / f"{it.id}.png", it.mask)
        report = {
            "data": str(data), "split": split, "val_split": val_split, "source": source,
            "labels": "simulated from the masks" if simulate else str(given_file),
            "method": {"boxes": method, "tags": f"cam+{getattr(tag_settings, 'method', '')}",
                       "scribbles": "clustering with scribbles",
                       "attention": "stableseg"}[source],
            "negatives": len(negative_images),
            "classes": list(names), "num_images": len(train.items),
            "seconds": round(seconds, 1), "seconds_per_image": round(seconds / len(pseudo), 3),
        }  # fmt: skip
        if all(it.mask is not None for it in train.items):
            report["quality"] = pseudo_mask_quality(pseudo, [it.mask for it in train.items],
                                                    names)  # fmt: skip
            if rounds:  # round 0 is the first pseudo-masks; the last is "quality"
                report["quality_by_round"] = [*history, report["quality"]]
        report["rounds"] = rounds
        if getattr(make, "layer_weights", None) is not None:  # StableSeg++: kept for reuse
            from ..attention import save_layer_weights

            save_layer_weights(tmp / "layer_weights.json", make.layer_weights)
            report["method"] = "stableseg++"
        if source == "boxes":
            write_json(tmp / "boxes.json", boxes_to_json(given, names))
        elif source == "tags":
            (tmp / "tags.txt").write_text("".join(
                f"{i} {' '.join(names[c] for c in sorted(t))}\n" for i, t in given.items()))
        write_json(tmp / "pseudo.json", report)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return json.loads((out / "pseudo.json").read_text())


def _tag_maker(train, tags: dict, negatives: list, settings: TagSettings, progress: bool):
    """Train the tag classifier on the split (+ negatives) and return the per-image maker."""
    images = [it.image for it in train.items] + negatives
    targets = [{c - 1 for c in tags.get(it.id, set())} for it in train.items]
    targets += [set()] * len(negatives)
    if not any(targets):
        raise InputError("no image has a tag: nothing to learn the classes from")
    bar = tqdm(total=1, desc="tag classifier", disable=not progress, leave=False)

    def report(step, steps, loss):
        bar.total = steps
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")

    net = train_classifier(images, targets, train.num_classes - 1, settings, report)  # tag k:
    # class k + 1
    bar.close()

    def make(it):
        cams = class_maps(net, it.image, settings.size)
        return pseudo_mask_from_tags(it.image, {c - 1 for c in tags.get(it.id, set())}, cams,
                                     settings)  # fmt: skip

    return make


FIT_IMAGES = 100  # StableSeg++ fits on at most this many images, spread over the split


def _attention_maker(path, names: tuple[str, ...], device: str, fit_on=None,
                     progress: bool = False, sure: float = 0.5):  # fmt: skip
    """StableSeg+: the attention segmentation of the class names as each pseudo-mask, void
    where its probability of the chosen class is under ``sure``.

    With ``fit_on`` (the split's items) StableSeg++: StableSeg+'s pseudo-masks of up to
    FIT_IMAGES of them, evenly spread, fit one weight per cross-attention layer, and the
    maker segments with those weights; they are its ``layer_weights`` (None without a fit).
    """
    from ..attention import fit_layer_weights, layer_maps, load_attention_model, segment_captured

    if names[0] != "background":
        raise InputError("--from attention needs a dataset whose class 0 is 'background'")
    model = load_attention_model(path, device=device)
    # a prompt too long for the text encoder is refused now, before any U-Net pass
    classes = model.check_prompt(list(names[1:]))[0]  # background is added as class 0

    def pseudo_mask(result):
        labels = result.labels.copy()
        labels[result.probs.max(0) < sure] = VOID
        return labels

    weights = None
    if fit_on:
        picks = np.linspace(0, len(fit_on) - 1, min(FIT_IMAGES, len(fit_on))).round()
        maps, masks = [], []
        for i in tqdm(np.unique(picks.astype(int)), desc="layer weights: StableSeg+ masks",
                      disable=not progress, leave=False):  # fmt: skip
            it = fit_on[i]
            cap = model.capture(it.image, list(classes))
            masks.append(pseudo_mask(segment_captured(cap, classes, it.image.shape[:2])))
            maps.append(layer_maps(cap))  # small: the pass's attention is not kept
        weights = fit_layer_weights(maps, masks, classes)

    def make(it):
        return pseudo_mask(model.segment(it.image, list(classes), layer_weights=weights))

    make.layer_weights = weights
    return make
