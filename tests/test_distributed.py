"""Training scales out under Accelerate: two CPU processes (gloo) under ``accelerate launch``.

Each training runs in its own 2-process launch, the way the CLI runs it, and every rank reports
what it really trained. The trainers return no network, so the worker script records it where
they hand it to Accelerate: ``Accelerator.prepare`` is wrapped (in the worker only, nothing in
segrefine is patched) to keep the prepared network and optimizer and to hook the network's
forward. At every training step each rank records a digest of the inputs it feeds the network
and of the state (parameters and buffers) the step starts from; after training it writes its
final network and optimizer state to a safetensors file. The tests compare the ranks with each
other and with the run folder the main process wrote.

Launch: ``accelerate launch --multi_gpu --num_processes 2`` with ``CUDA_VISIBLE_DEVICES=""``
and ``device="cpu"`` (the trainers' ``Accelerator(cpu=True)`` then picks gloo). Not ``--cpu``:
with ``--cpu`` accelerate's simple launcher starts ONE process (multi-CPU needs mpirun there).
The tests skip only when a probe launch shows that this platform cannot start a gloo group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import segrefine
from segrefine import checkpoint

WORLD = 2
LAUNCH_TIMEOUT = 240  # seconds; a launch normally takes 3-8 s here

PROBE = textwrap.dedent(
    """
    import os, sys
    from datetime import timedelta
    from pathlib import Path

    out = Path(sys.argv[1])
    rank = os.environ["RANK"]
    (out / f"started.{rank}").touch()
    import torch, torch.distributed as dist

    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    t = torch.ones(1)
    dist.all_reduce(t)
    assert t.item() == dist.get_world_size(), t
    dist.destroy_process_group()
    (out / f"gloo_ok.{rank}").touch()
    """
)

WORKER = textwrap.dedent(
    """
    import hashlib, json, os, sys, time
    from pathlib import Path

    import torch
    from accelerate import Accelerator
    from safetensors.torch import save_file

    kind, data, out = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    rank = int(os.environ["RANK"])


    def digest(*tensors):
        h = hashlib.sha256()
        for t in tensors:
            h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
        return h.hexdigest()[:20]


    prepared = []  # what each training handed to Accelerate, on this rank
    _prepare = Accelerator.prepare


    def recording_prepare(self, *objects, **kwargs):
        result = _prepare(self, *objects, **kwargs)
        model = next(r for r in result if isinstance(r, torch.nn.Module))
        optimizer = next(r for r in result if isinstance(r, torch.optim.Optimizer))
        net = self.unwrap_model(model)
        steps = []

        def before_forward(module, args):
            if module.training:  # validation forwards (eval mode) are not training steps
                steps.append({
                    "inputs": digest(*[a for a in args if torch.is_tensor(a)]),
                    "state": digest(*module.state_dict().values()),
                })

        net.register_forward_pre_hook(before_forward)
        prepared.append({"accelerator": self, "model": model, "optimizer": optimizer,
                         "steps": steps})
        return result


    Accelerator.prepare = recording_prepare

    from segrefine.diffusion import RefinerConfig, train_refiner
    from segrefine.segmenting.train import TrainConfig, train_segmenter

    def segmenter(epochs=3):
        return TrainConfig(data=data, size=32, width=8, depth=2, epochs=epochs, batch_size=4,
                           seed=0)

    if kind == "segmenter":
        train_segmenter(segmenter(), out / "run", device="cpu", progress=False)
    elif kind == "refiner":
        cfg = RefinerConfig(data=data, size=32, width=8, depth=2, features=8, head_width=8,
                            batch_size=4, warmup=2, iterations=6, val_every=3, band=0)
        train_refiner(cfg, out / "run", device="cpu", progress=False)
    elif kind == "lagging_rank":
        # two runs in one process (as out-of-fold segmenters are trained); rank 1 reaches the
        # second a moment after the main process, as any rank may on a busy machine
        train_segmenter(segmenter(1), out / "first", device="cpu", progress=False)
        if rank == 1:
            time.sleep(1.0)
        train_segmenter(segmenter(1), out / "run", device="cpu", progress=False)
    else:
        raise SystemExit(f"unknown kind {kind}")

    last = prepared[-1]
    acc, model, optimizer = last["accelerator"], last["model"], last["optimizer"]
    tensors = {f"model.{k}": v for k, v in acc.unwrap_model(model).state_dict().items()}
    for pid, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{pid}.{name}"] = value
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()},
              str(out / f"rank{rank}.safetensors"))
    (out / f"rank{rank}.json").write_text(json.dumps({
        "wrapper": type(model).__name__,
        "num_processes": acc.num_processes,
        "process_index": acc.process_index,
        "distributed_type": acc.distributed_type.name,
        "steps": last["steps"],
    }))
    """
)


def _env(home: Path) -> dict[str, str]:
    """The ranks' environment: one thread each, no GPU, no network, no user accelerate config,
    and the same segrefine as this test process imports."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACCELERATE_", "TORCHELASTIC_"))
           and k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                         "MASTER_PORT", "GROUP_RANK")}
    src = str(Path(segrefine.__file__).resolve().parents[1])
    env.update(
        OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="",
        HF_HOME=str(home / "hf"), HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p),
    )  # fmt: skip
    if "lo" in {name for _, name in socket.if_nameindex()}:
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # MASTER_ADDR is 127.0.0.1
    return env


def _launch(script: str, args: list[str], folder: Path) -> tuple[int | None, str]:
    """Run ``script`` in WORLD processes under ``accelerate launch``: (exit code or None when
    it hung, output)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "script.py"
    path.write_text(script)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(WORLD), "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--main_process_ip", "127.0.0.1",
           "--main_process_port", "0", str(path), *args]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=folder, env=_env(folder), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=LAUNCH_TIMEOUT)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks (own session)
        output, _ = proc.communicate()
        return None, output


@pytest.fixture(scope="module")
def gloo(tmp_path_factory):
    """Skip unless two local processes can form a gloo group (e.g. no loopback networking)."""
    folder = tmp_path_factory.mktemp("gloo_probe")
    code, output = _launch(PROBE, [str(folder)], folder)
    started = len(list(folder.glob("started.*")))
    ok = len(list(folder.glob("gloo_ok.*")))
    if started < WORLD:  # the launcher itself failed: not a platform limit
        pytest.fail(f"accelerate launch did not start {WORLD} processes (exit {code}):\n"
                    f"{output[-4000:]}")
    if code != 0 or ok < WORLD:
        pytest.skip(f"this platform cannot start a {WORLD}-process gloo group:\n"
                    f"{_errors(output)}")


class Ranks:
    """One launch's results: the run folder and what every rank reported."""

    def __init__(self, folder: Path):
        self.run = folder / "run"
        self.info = [json.loads((folder / f"rank{r}.json").read_text()) for r in range(WORLD)]
        self.state = [load_file(str(folder / f"rank{r}.safetensors")) for r in range(WORLD)]


def _errors(output: str) -> str:
    """The exception lines of a launch's output (each rank's, then the launcher's)."""
    pattern = re.compile(r"^(?:\[rank\d+\]: )?[A-Za-z_][\w.]*(?:Error|Exception)\b.*")
    found = [m.group(0) for m in map(pattern.match, output.splitlines()) if m]
    return "\n".join(dict.fromkeys(found)) or "(no exception in the output)"


def _launch_training(kind: str, data: Path, folder: Path) -> Ranks:
    code, output = _launch(WORKER, [kind, str(data), str(folder)], folder)
    assert code is not None, f"{kind}: the 2-process training hung:\n{output[-6000:]}"
    assert code == 0, (f"{kind}: the 2-process training failed (exit {code}):\n"
                       f"{_errors(output)}\n\n{output[-6000:]}")
    return Ranks(folder)


@pytest.fixture(scope="module", params=["segmenter", "refiner"])
def trained(request, gloo, tmp_path_factory, synthetic_root) -> tuple[str, Ranks]:
    kind = request.param
    return kind, _launch_training(kind, synthetic_root, tmp_path_factory.mktemp(kind))


# the runs' sizes: 16 training images, batch 4 per rank
EXPECTED_STEPS = {"segmenter": 3 * (16 // (4 * WORLD)), "refiner": 6}
EXPECTED_RECORDS = {"segmenter": 3, "refiner": 2}


def _bn_running_stats(key: str) -> bool:
    return key.endswith((".running_mean", ".running_var"))


def test_both_ranks_train_one_data_parallel_model(trained):
    kind, ranks = trained
    for r, info in enumerate(ranks.info):
        assert info["distributed_type"] == "MULTI_CPU", info
        assert (info["num_processes"], info["process_index"]) == (WORLD, r)
        assert info["wrapper"] == "DistributedDataParallel"
        assert len(info["steps"]) == EXPECTED_STEPS[kind], kind


def test_every_step_starts_from_the_same_state_on_every_rank(trained):
    _, ranks = trained
    states = [[s["state"] for s in info["steps"]] for info in ranks.info]
    assert all(s == states[0] for s in states), "the ranks' weights diverged during training"


def test_final_weights_and_optimizer_state_are_identical_on_every_rank(trained):
    """Parameters and optimizer state must match bit for bit. BatchNorm running statistics
    are buffers, not weights: DDP broadcasts rank 0's at the start of every forward (the step
    states above match), so after the last step each rank holds its own last update. Only
    rank 0's are saved."""
    kind, ranks = trained
    first = ranks.state[0]
    for r, other in enumerate(ranks.state[1:], 1):
        assert other.keys() == first.keys()
        differ = {k: (first[k].double() - other[k].double()).abs().max().item()
                  for k in first if not torch.equal(first[k], other[k])}
        weights = {k: d for k, d in differ.items() if not _bn_running_stats(k)}
        assert not weights, f"{kind}: rank {r} differs from rank 0 (max abs diff): {weights}"


def test_the_main_process_alone_writes_the_run_folder(trained):
    kind, ranks = trained
    run = ranks.run
    for name in (checkpoint.CONFIG, checkpoint.WEIGHTS, checkpoint.LAST, checkpoint.LOG):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.tmp")) and not list(run.glob(".*"))
    assert json.loads((run / checkpoint.CONFIG).read_text())["kind"] == kind
    log = [json.loads(line) for line in (run / checkpoint.LOG).read_text().splitlines()]
    assert len(log) == EXPECTED_RECORDS[kind], log  # once, not once per rank
    saved, meta = checkpoint.load_tensors(run / checkpoint.LAST)
    rank0 = ranks.state[0]
    model = {k: v for k, v in saved.items() if k.startswith("model.")}
    assert model.keys() == {k for k in rank0 if k.startswith("model.")}
    assert all(torch.equal(v, rank0[k]) for k, v in model.items()), \
        "last.safetensors is not the main process's final network"
    assert meta["history"] == log


def test_the_ranks_train_on_different_data(trained):
    """Data parallelism must split the work: at each step every rank feeds the network its own
    batch. Identical inputs on every rank mean WORLD processes do the work of one."""
    kind, ranks = trained
    per_step = list(zip(*[[s["inputs"] for s in info["steps"]] for info in ranks.info],
                        strict=True))
    same = [i for i, inputs in enumerate(per_step) if len(set(inputs)) < WORLD]
    assert not same, (f"{kind}: at steps {same} of {len(per_step)} the ranks trained on "
                      f"identical batches")


def test_a_lagging_rank_starts_the_next_run_with_the_main_process(
    gloo, tmp_path, synthetic_root
):
    """Two runs in one process (as out-of-fold segmenters are trained): a rank that reaches the
    second run after the main process has created its folder must still train it, not take it
    for an existing run."""
    ranks = _launch_training("lagging_rank", synthetic_root, tmp_path / "lag")
    assert (ranks.run / checkpoint.WEIGHTS).is_file()
    assert all(len(info["steps"]) == 16 // (4 * WORLD) for info in ranks.info)


CLI = "import sys\nfrom segrefine.cli import main\nsys.argv[0] = 'segrefine'\nmain()\n"


def test_refine_in_two_processes_writes_each_image_once_as_one_process_does(
    gloo, tmp_path, synthetic_root, trained_run, trained_refiner, run_cli
):
    """``refine`` under ``accelerate launch`` shares the images out between the processes;
    together they write exactly what one process writes."""
    images = synthetic_root / "images" / "val"
    args = ["refine", "--refiner", str(trained_refiner[0]), "--segmenter", str(trained_run),
            "--images", str(images), "--device", "cpu", "-q"]  # fmt: skip
    code, _, err = run_cli(*args, "--out", str(tmp_path / "one"))
    assert code == 0, err
    code, output = _launch(CLI, [*args, "--out", str(tmp_path / "two")], tmp_path / "launch")
    assert code == 0, f"{_errors(output)}\n{output[-4000:]}"
    one = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == one
    for name in one:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    shares = re.findall(r"refined (\d+) images", output)
    assert sorted(map(int, shares)) == [4, 4], output  # 8 images, half each
