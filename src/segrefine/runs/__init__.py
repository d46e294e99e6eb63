"""Run folders: what a trained model is (its spec), how a trainer keeps its folder, and how a
trained model is loaded back. Used by both trainers and by whatever trains next.

A run folder (layout and file formats in :mod:`segrefine.checkpoint`) is described by a *spec*:
a dataclass written as ``config.json`` that says what was trained (kind, architecture, classes,
protocol size) and the settings it was trained with. :class:`RunFolder` is the trainer's side
(create, refuse to overwrite, resume, keep the best weights and the log);
:class:`LoadableRun` is the user's side (``Segmenter.load``, ``Refiner.load``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from .. import checkpoint
from ..data.datasets import open_dataset
from ..data.io import atomic_path, remove_stale_temporaries
from ..errors import InputError
from .lock import RunLock


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Base of the run specs: what ``config.json`` holds, as typed fields."""

    kind: ClassVar[str]
    class_names: tuple[str, ...]
    size: int  # the protocol size the run was trained at
    classes: list[str] | None = None  # the class selection given to the trainer
    binary_per_class: bool = False
    train: dict = dataclasses.field(default_factory=dict)  # the trainer's settings, as given

    def to_json(self) -> dict:
        out = {"kind": self.kind}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_json(cls, config: dict, where: str | Path | None = None):
        """The spec in a run's config dict; a missing or malformed entry is an input error."""
        known = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING}  # fmt: skip
        missing = sorted(required - config.keys())
        if missing:
            raise InputError(f"run config lacks {', '.join(missing)}", where)
        values = {k: v for k, v in config.items() if k in known}
        if not isinstance(values["class_names"], list):  # a string would be its letters
            raise InputError("run config is malformed (class_names must be a list of names)",
                             where)  # fmt: skip
        try:
            spec = cls(**{**values, "class_names": tuple(values["class_names"])})
            spec.check()
        except (TypeError, ValueError) as err:
            raise InputError(f"run config is malformed ({err})", where) from err
        return spec

    def check(self) -> None:
        if not self.class_names or not all(isinstance(c, str) for c in self.class_names):
            raise ValueError("class_names must be a non-empty list of names")
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError("class_names has duplicates")
        if len(self.class_names) > MAX_CLASSES:
            raise ValueError(f"more than {MAX_CLASSES} classes")
        _bounded("size", self.size, 8, 4096)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# A run folder is input (users share them): sizes are bounded before anything is allocated.
MAX_CLASSES = 255  # 255 is void
MAX_WIDTH, MAX_DEPTH = 512, 8


def _bounded(name: str, value, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


def check_network(network: dict, keys: tuple[str, ...]) -> None:
    """Bounds on a spec's architecture numbers (a shared config may ask for terabytes)."""
    if not isinstance(network, dict):
        raise ValueError("the architecture must be a mapping")
    for key in keys:
        if key not in network:
            raise ValueError(f"the architecture lacks {key}")
        high = MAX_DEPTH if key == "depth" else MAX_WIDTH
        _bounded(key, network[key], 0 if key == "band" else 1, high)


@dataclasses.dataclass
class TrainingData:
    """The data a training run learns from, the same for every trainer (the first fields of
    ``TrainConfig`` and ``RefinerConfig``)."""

    data: str
    split: str = "train"
    val_split: str | None = "val"
    classes: list[str] | None = None
    binary_per_class: bool = False
    size: int = 128


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 / AMX); emulated bf16 on older
    CPUs is slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 autocast speeds a network up on ``device``: CUDA with bf16, or a CPU
    with native bf16."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and native_bf16()


def check_settings(checks: dict[str, bool], what: str) -> None:
    """Raise one :class:`InputError` naming the first failed check (``name: condition``)."""
    for name, ok in checks.items():
        if not ok:
            raise InputError(f"{what}: invalid {name}")


class LoadableRun:
    """``load(run_dir)`` for a model class built from a spec (one loader for every kind)."""

    spec_type: ClassVar[type[RunSpec]]

    @classmethod
    def from_spec(cls, spec: RunSpec, device: str | torch.device = "cpu"):
        raise NotImplementedError

    def module(self) -> torch.nn.Module:
        """The network the run's weights belong to."""
        raise NotImplementedError

    @classmethod
    def load(cls, run_dir: str | Path, device: str = "auto", backend: str = "torch"):
        """Load the best weights of a run folder of this kind, or of a zoo entry's
        (``"zoo:NAME"``, checked against its manifest; :mod:`segrefine.zoo`). ``backend``
        ``"onnxruntime"`` runs the networks as ONNX graphs (:mod:`segrefine.deploy`)."""
        run_dir = checkpoint.run_folder(run_dir, cls.spec_type.kind)
        config = checkpoint.read_config(run_dir, kind=cls.spec_type.kind)
        model = cls.from_spec(cls.spec_type.from_json(config, Path(run_dir) / checkpoint.CONFIG),
                              device)  # fmt: skip
        checkpoint.load_weights(model.module(), run_dir)
        model.module().eval()
        model.prepare_inference()
        if backend != "torch":
            from ..deploy import use_backend

            use_backend(model, backend)
        return model

    def prepare_inference(self) -> None:
        """Run inference on a copy of the network made for speed: BatchNorm folded into the
        convolutions before it and a channels-last layout (a refiner's native refinement
        ~30% faster on a 2-core CPU; docs/benchmarks.md). The network itself is unchanged,
        for training and saving; call this again after changing its weights (replacing the
        network drops the copy). :meth:`load` calls it."""
        from ..models.blocks import fuse_for_inference

        net = self.module()
        self._fast = (net, fuse_for_inference(net).to(memory_format=torch.channels_last))

    @property
    def inference_module(self) -> torch.nn.Module:
        """The network inference runs: the fast copy while it is the network's, else the
        network itself."""
        fast = getattr(self, "_fast", None)
        return fast[1] if fast is not None and fast[0] is self.module() else self.module()

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str = "auto"):
        """:meth:`load` under the name the ecosystem uses (a local folder only: nothing is
        ever downloaded)."""
        return cls.load(path, device)

    def save_pretrained(self, path: str | Path) -> None:
        """Write this model as a run folder (``config.json`` and ``model.safetensors``) that
        :meth:`from_pretrained` reads back; refuses a folder that holds a run already."""
        path = Path(path)
        if (path / checkpoint.CONFIG).exists():
            raise InputError("already holds a run", path)
        path.mkdir(parents=True, exist_ok=True)
        checkpoint.save_tensors(path / checkpoint.WEIGHTS, self.module().state_dict())
        checkpoint.write_config(path, self.spec.to_json())


EXAMPLES = "examples"  # a run's folder of example images
MAX_EXAMPLES, EXAMPLE_SIDE = 4, 256


def example_sources(data: str | Path, split: str) -> list[Path]:
    """Up to :data:`MAX_EXAMPLES` image files of a validation ``split``, evenly spread."""
    if not split:
        return []
    samples = open_dataset(data, split).samples
    picks = sorted({round(i * (len(samples) - 1) / max(MAX_EXAMPLES - 1, 1))
                    for i in range(min(MAX_EXAMPLES, len(samples)))})  # fmt: skip
    return [samples[i].image for i in picks]


def write_examples(folder: Path, sources: Sequence[Path]) -> None:
    """``<id>.jpg`` per source image, its longest side shrunk to :data:`EXAMPLE_SIDE`."""
    from PIL import Image

    from ..data.io import read_image

    for src in sources:
        image = Image.fromarray(read_image(src))
        image.thumbnail((EXAMPLE_SIDE, EXAMPLE_SIDE))
        folder.mkdir(exist_ok=True)
        with atomic_path(folder / f"{Path(src).stem}.jpg") as tmp:
            image.save(tmp, format="JPEG", quality=90)


def list_examples(run_dir: Path) -> list[str]:
    """The example images a run carries (file names under ``examples/``)."""
    folder = Path(run_dir) / EXAMPLES
    if not folder.is_dir():
        return []
    # a shared run is input: a link in it may point anywhere, so it is no example
    return sorted(p.name for p in folder.glob("*.jpg")
                  if not p.is_symlink() and p.is_file())[: 2 * MAX_EXAMPLES]  # fmt: skip


def make_accelerator(device: torch.device, mixed_precision: bool):
    """An Accelerator on ``device`` (bf16 autocast on CUDA when ``mixed_precision``). Under
    ``accelerate launch`` or ``torchrun`` it joins the process group the launcher set up."""
    from accelerate import Accelerator  # heavy import: only when training

    return Accelerator(
        cpu=device.type == "cpu",
        mixed_precision="bf16" if device.type == "cuda" and mixed_precision else "no",
    )


class RunFolder:
    """A trainer's run folder: created once, refused when it already holds a run, resumed
    from ``last.safetensors``; keeps the best weights, the training state and the log.

    Only the main process writes (``main=False`` makes every write a no-op), so the same
    trainer code runs in one process or several.
    """

    def __init__(self, path: str | Path, kind: str, main: bool = True):
        self.path, self.kind, self.main = Path(path), kind, main
        self.best: dict | None = None
        self.history: list[dict] = []
        self.lock = RunLock(self.path)

    def saved_train_settings(self) -> dict:
        """The trainer settings of the run being resumed."""
        return checkpoint.read_config(self.path, kind=self.kind)["train"]

    def refuse_existing(self) -> None:
        if (self.path / checkpoint.CONFIG).exists():
            raise InputError(
                "already holds a run; pass --resume to continue it or pick another --out",
                self.path,
            )

    def create(self, spec: RunSpec, examples: Sequence[Path] = ()) -> None:
        """Write the run's config (the folder is made now, after every input was checked)
        and small copies of a few ``examples`` images (what the web app offers to try the
        run on); a resumed folder is first cleared of the temporaries a killed run left.
        The folder's training lock is taken first (:mod:`segrefine.runs.lock`): a second
        trainer of the same run stops here, before it touches the first one's files; the
        trainer gives it back with :meth:`release`."""
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            self.lock.acquire()
            try:
                remove_stale_temporaries(self.path)
                checkpoint.write_config(self.path, spec.to_json())
                write_examples(self.path / EXAMPLES, examples)
            except BaseException:
                self.release()
                raise

    def release(self) -> None:
        """The end of training in this process: the run may be resumed by another."""
        self.lock.release()

    def restore(self, net: torch.nn.Module, optimizer, resume: bool = True,
                counter: str = "epoch") -> dict | None:
        """With ``resume``, load the newest training state into ``net`` and ``optimizer`` and
        return its meta (``best``, ``history``, the trainer's ``counter`` and its own keys);
        None for a fresh run. The log is rebuilt from it, so a crash between the two never
        leaves a period logged that the resumed run will train again."""
        meta = None
        if resume and (self.path / checkpoint.LAST).exists():
            meta = checkpoint.load_training_state(self.path, net, optimizer)
            _check_progress(meta, counter, self.path / checkpoint.LAST)
            self.best, self.history = meta["best"], meta["history"]
        if self.main:
            (self.path / checkpoint.LOG).unlink(missing_ok=True)
            for record in self.history:
                checkpoint.append_log(self.path, record)
        return meta

    def keep_if_best(self, record: dict, score: float, net: torch.nn.Module,
                     key: str = "epoch") -> bool:
        """End of a training period (an epoch, a validation interval): keep ``net``'s weights
        as the run's weights when ``score`` is the best so far. ``key`` names the period's
        counter in ``record``; ``record["best"]`` says whether it was the best."""
        is_best = self.best is None or score > self.best["score"]
        if is_best:
            self.best = {"score": score, key: record[key]}
            if self.main:
                checkpoint.save_tensors(self.path / checkpoint.WEIGHTS, net.state_dict(),
                                        {key: record[key]})  # fmt: skip
        record["best"] = is_best
        return is_best

    def save_state(self, record: dict, net: torch.nn.Module, optimizer, state: dict[str, Any],
                   extra: dict[str, torch.Tensor] | None = None) -> None:
        """Save the training state (``state`` plus the best period and the history, ``extra``
        tensors beside the weights) and then log ``record``: in that order, so that every
        logged period can be resumed from."""
        self.history.append(record)
        if self.main:
            checkpoint.save_training_state(
                self.path, net, optimizer, {**state, "best": self.best, "history": self.history},
                extra,
            )
            checkpoint.append_log(self.path, record)

    def best_record(self, key: str = "epoch") -> dict:
        """The logged record of the best period (empty when nothing was trained)."""
        if self.best is None:
            return {}
        return next(r for r in self.history if r[key] == self.best[key])


def _check_progress(meta: dict, counter: str, path: Path) -> None:
    """The trainer's progress in a training state is input too (the file may be edited)."""
    ok = (isinstance(meta.get(counter), int) and not isinstance(meta[counter], bool)
          and meta[counter] >= 0 and isinstance(meta.get("history"), list)
          and all(isinstance(r, dict) for r in meta["history"])
          and (meta.get("best") is None or isinstance(meta["best"], dict)
               and isinstance(meta["best"].get("score"), (int, float))))  # fmt: skip
    if not ok:
        raise InputError(f"training state lacks a valid '{counter}', 'best' or 'history'; "
                         "remove it to start over from the kept weights", path)


def check_same_classes(first: tuple[str, Sequence[str]], second: tuple[str, Sequence[str]],
                       where: str | Path | None = None) -> None:  # fmt: skip
    """The one class-compatibility check: ``first`` and ``second`` are (what, class names)
    pairs, e.g. ("the segmenter", seg.class_names), that must name the same classes in the
    same order (a refiner reads probability channels by position)."""
    (a, names_a), (b, names_b) = first, second
    if tuple(names_a) != tuple(names_b):
        raise InputError(
            f"{a} has {len(names_a)} classes ({', '.join(names_a)}) but {b} has "
            f"{len(names_b)} ({', '.join(names_b)}); they must be the same classes in the "
            f"same order", where,
        )  # fmt: skip
