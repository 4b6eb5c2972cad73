"""Engine throughput: one training step of the reference conv autoencoder, a small CNN
classifier, and inference alone, in samples/s; PyTorch CPU on the same networks when a
PyTorch venv exists (``make bench-torch-venv``), with the ratio, in the same run.

    python benchmarks/engine_bench.py [--steps 30] [--torch-python .venv-torch/bin/python]

Goal (issue 2): training throughput ≥ 0.6 × PyTorch CPU; peak RSS ≤ 400 MB.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 64
ROOT = Path(__file__).resolve().parent.parent


def time_calls(fn, steps: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# -- our engine ----------------------------------------------------------------
def engine_networks():
    sys.path.insert(0, str(ROOT))
    from engine import Sequential
    from engine import layers as L

    autoencoder = Sequential(
        L.Convolution(1, 16, (3, 3), pad=1),
        L.ReLU(),
        L.MaxPooling((2, 2)),
        L.Convolution(16, 32, (3, 3), pad=1),
        L.ReLU(),
        L.MaxPooling((2, 2)),
        L.Affine(32 * 7 * 7, 64),
        L.ReLU(),
        L.Affine(64, 1568),
        L.ReLU(),
        L.Reshape((32, 7, 7)),
        L.Deconvolution(32, 16, (2, 2), stride=2),
        L.ReLU(),
        L.Deconvolution(16, 1, (2, 2), stride=2),
        L.Sigmoid(),
    )
    classifier = Sequential(
        L.Convolution(1, 16, (3, 3), pad=1),
        L.ReLU(),
        L.MaxPooling((2, 2)),
        L.Convolution(16, 32, (3, 3), pad=1),
        L.ReLU(),
        L.MaxPooling((2, 2)),
        L.Affine(32 * 7 * 7, 128),
        L.ReLU(),
        L.Affine(128, 10),
    )
    return autoencoder, classifier


def bench_engine(steps: int) -> dict[str, float]:
    from engine import losses, no_grad
    from engine.solvers import Adam

    rng = np.random.default_rng(0)
    x = rng.random((BATCH, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, (BATCH, 1))
    ae, cnn = engine_networks()
    ae_solver, cnn_solver = Adam(ae), Adam(cnn)

    def ae_step():
        loss = losses.squared_error(ae(x), x).mean()
        ae_solver.zero_grad()
        loss.backward()
        ae_solver.update()

    def cnn_step():
        loss = losses.softmax_cross_entropy(cnn(x), y).mean()
        cnn_solver.zero_grad()
        loss.backward()
        cnn_solver.update()

    def ae_infer():
        with no_grad():
            ae(x)

    return {
        "ae_train": BATCH / time_calls(ae_step, steps),
        "cnn_train": BATCH / time_calls(cnn_step, steps),
        "ae_infer": BATCH / time_calls(ae_infer, steps),
    }


# -- PyTorch (run inside the PyTorch venv) ---------------------------------------------
def bench_torch(steps: int) -> dict[str, float]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    ae = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1568, 64),
        nn.ReLU(),
        nn.Linear(64, 1568),
        nn.ReLU(),
        nn.Unflatten(1, (32, 7, 7)),
        nn.ConvTranspose2d(32, 16, 2, stride=2),
        nn.ReLU(),
        nn.ConvTranspose2d(16, 1, 2, stride=2),
        nn.Sigmoid(),
    )
    cnn = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(1568, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
    x = torch.rand(BATCH, 1, 28, 28)
    y = torch.randint(0, 10, (BATCH,))
    ae_opt, cnn_opt = torch.optim.Adam(ae.parameters()), torch.optim.Adam(cnn.parameters())

    def ae_step():
        loss = ((ae(x) - x) ** 2).mean()
        ae_opt.zero_grad()
        loss.backward()
        ae_opt.step()

    def cnn_step():
        loss = nn.functional.cross_entropy(cnn(x), y)
        cnn_opt.zero_grad()
        loss.backward()
        cnn_opt.step()

    def ae_infer():
        with torch.no_grad():
            ae(x)

    out = {
        "ae_train": BATCH / time_calls(ae_step, steps),
        "cnn_train": BATCH / time_calls(cnn_step, steps),
        "ae_infer": BATCH / time_calls(ae_infer, steps),
    }
    out["torch_version"] = torch.__version__
    out["threads"] = torch.get_num_threads()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--torch-python", default=str(ROOT / ".venv-torch" / "bin" / "python"))
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_only:
        print(json.dumps(bench_torch(args.steps)))
        return

    ours = bench_engine(args.steps)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    theirs = None
    if Path(args.torch_python).exists():
        run = subprocess.run(
            [args.torch_python, __file__, "--torch-only", "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=False,
        )
        if run.returncode == 0:
            theirs = json.loads(run.stdout.strip().splitlines()[-1])
        else:
            print(f"PyTorch run failed:\n{run.stderr[-2000:]}")
    print(f"batch {BATCH}, input 1x28x28, median of {args.steps} steps (samples/s)")
    print(f"{'case':<12}{'engine':>12}{'pytorch':>12}{'ratio':>10}")
    for key in ("ae_train", "cnn_train", "ae_infer"):
        if theirs:
            print(f"{key:<12}{ours[key]:>12.0f}{theirs[key]:>12.0f}{ours[key] / theirs[key]:>10.2f}")
        else:
            print(f"{key:<12}{ours[key]:>12.0f}{'-':>12}{'-':>10}")
    if theirs:
        print(f"pytorch {theirs['torch_version']} with {theirs['threads']} threads")
    else:
        print("no PyTorch venv: run `make bench-torch-venv` to compare")
    print(f"peak RSS of the engine run: {peak_mb:.0f} MB (goal <= 400 MB)")


if __name__ == "__main__":
    main()
