"""Write the high-resolution synthetic datasets of the native-resolution benchmark.

The generator draws its scenes from continuous geometry, so a scene rendered at 2048 px has
exact boundaries at 2048 px (thin worms and ring edges included), not an upsampled 128-px
mask. Two roots are written under ``--out``, both with the same dataset seed:

* ``train{train_size}/``: ``--n-train`` training and ``--n-val`` validation scenes at
  ``--train-size`` px, for training a segmenter and a native refiner;
* ``val{val_size}/``: the same validation scenes (same seeds, so the same geometry) rendered
  at ``--val-size`` px, to benchmark at full size with ``segrefine benchmark --native``.

    python benchmarks/synthetic_hires.py --out runs/syn

The commands that train and score on them are in docs/benchmarks.md ("Synthetic scenes at
2048 px").
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from segrefine.data.synthetic import write_synthetic_dataset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-size", type=int, default=1024)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-val", type=int, default=10)
    p.add_argument("--val-size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for name, size, n_train in ((f"train{args.train_size}", args.train_size, args.n_train),
                                (f"val{args.val_size}", args.val_size, 0)):  # fmt: skip
        t0 = time.perf_counter()
        root = write_synthetic_dataset(args.out / name, n_train=n_train, n_val=args.n_val,
                                       size=size, seed=args.seed)  # fmt: skip
        print(f"{root}: {n_train} train + {args.n_val} val scenes at {size} px "
              f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
