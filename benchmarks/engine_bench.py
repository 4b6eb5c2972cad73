"""Engine throughput: one training step of the reference conv autoencoder, a small CNN
classifier, and inference alone, in samples/s; the detector's own pair (its autoencoder and
discriminative U-Net, one step on reconstruction + defect-map loss, batch 16) at 64×64 and
128×128; PyTorch CPU on the same networks when a PyTorch venv exists (``make
bench-torch-venv``), with the ratio, in the same run.

    python benchmarks/engine_bench.py [--rounds 7] [--steps 10] [--torch-python .venv-torch/bin/python]

The machine is noisy, so the engine and PyTorch (a child process in its own venv) run in
alternating blocks and the ratio reported is the median of the per-round ratios.

Goals: training throughput ≥ 1.0 × PyTorch CPU (issue 16; issue 2 asked 0.6 ×); peak RSS ≤ 400 MB.
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
DETECTOR_BATCH, DETECTOR_SIZES = 16, (64, 128)
PAUSE = 0.5  # seconds between blocks: lets the other side's spinning BLAS/OpenMP threads go idle
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's engine, not whichever one the venv has installed


# -- our engine ----------------------------------------------------------------
def engine_networks():
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


def engine_cases() -> dict:
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

    return {"ae_train": ae_step, "cnn_train": cnn_step, "ae_infer": ae_infer, **engine_detector_cases()}


def engine_detector_cases() -> dict:
    """The detector's networks exactly as it builds them (models.detector.model.Detector)."""
    from engine import functions as F
    from engine import losses
    from engine.solvers import Adam
    from models.detector.model import Detector, DetectorConfig

    cases = {}
    for size in DETECTOR_SIZES:
        rng = np.random.default_rng(size)
        x = rng.random((DETECTOR_BATCH, 1, size, size), dtype=np.float32)
        mask = (rng.random((DETECTOR_BATCH, 1, size, size)) < 0.05).astype(np.float32)
        net = Detector(DetectorConfig(size=size, crop=None)).net
        solver = Adam(net)

        def step(net=net, solver=solver, x=x, mask=mask):
            recon = net.ae(x)
            logits = net.clf(F.concatenate(x, recon, axis=1))
            loss = losses.squared_error(recon, x).mean() + losses.sigmoid_cross_entropy(logits, mask).mean()
            solver.zero_grad()
            loss.backward()
            solver.update()

        cases[f"det{size}_train"] = step
    return cases


# -- PyTorch (run inside the PyTorch venv) ---------------------------------------------
def torch_cases() -> dict:
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

    return {"ae_train": ae_step, "cnn_train": cnn_step, "ae_infer": ae_infer, **torch_detector_cases()}


def torch_detector_cases() -> dict:
    """The detector's pair in PyTorch: conv autoencoder (16, 32, 64; 2×2 stride-2 deconvolutions)
    and the U-Net of models.zoo.detector_classifier (width 16, depth 2, stride-2 stem, bilinear
    output upsampling)."""
    import torch
    from torch import nn

    def cbr(cin: int, cout: int, stride: int = 1) -> list:
        return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]

    class Level(nn.Module):
        def __init__(self, cin: int, w: int, remaining: int) -> None:
            super().__init__()
            self.conv = nn.Sequential(*cbr(cin, w))
            self.deeper = None
            if remaining:
                self.deeper = nn.Sequential(
                    nn.MaxPool2d(2), Level(w, 2 * w, remaining - 1), nn.Upsample(scale_factor=2)
                )
                self.out = nn.Sequential(*cbr(3 * w, w))

        def forward(self, x):
            x = self.conv(x)
            return x if self.deeper is None else self.out(torch.cat([x, self.deeper(x)], 1))

    cases = {}
    for size in DETECTOR_SIZES:
        widths = (1, 16, 32, 64)  # models.zoo.conv_autoencoder with the detector's widths, mirrored
        encoder = [
            m
            for a, b in zip(widths[:-1], widths[1:], strict=True)
            for m in (nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        ]
        back = widths[::-1]
        decoder = [
            m
            for a, b in zip(back[:-1], back[1:], strict=True)
            for m in (nn.ConvTranspose2d(a, b, 2, stride=2), nn.ReLU())
        ]
        ae = nn.Sequential(*encoder, *decoder[:-1], nn.Sigmoid())
        clf = nn.Sequential(
            *cbr(2, 16, 2),
            Level(16, 16, 2),
            nn.Conv2d(16, 1, 1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        )
        x = torch.rand(DETECTOR_BATCH, 1, size, size)
        mask = (torch.rand(DETECTOR_BATCH, 1, size, size) < 0.05).float()
        opt = torch.optim.Adam([*ae.parameters(), *clf.parameters()])

        def step(ae=ae, clf=clf, x=x, mask=mask, opt=opt):
            recon = ae(x)
            logits = clf(torch.cat([x, recon], 1))
            loss = ((recon - x) ** 2).mean() + nn.functional.binary_cross_entropy_with_logits(logits, mask)
            opt.zero_grad()
            loss.backward()
            opt.step()

        cases[f"det{size}_train"] = step
    return cases


class TorchWorker:
    """PyTorch in its own venv, as a child process that times steps on request, so that the
    engine and PyTorch run alternately in the same run and a noisy machine hits both alike."""

    def __init__(self, python: str, warmup: int) -> None:
        self.proc = subprocess.Popen(
            [python, __file__, "--torch-worker", "--warmup", str(warmup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.info = json.loads(self.proc.stdout.readline())

    def time(self, case: str, steps: int) -> float:
        self.proc.stdin.write(f"{case} {steps}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def torch_worker(warmup: int) -> None:
    import torch

    cases = torch_cases()
    for fn in cases.values():
        for _ in range(warmup):
            fn()
    print(json.dumps({"torch_version": torch.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        case, steps = line.split()
        print(block_seconds(cases[case], int(steps)), flush=True)


def block_seconds(fn, steps: int) -> float:
    """Median seconds per call over one block of calls."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7, help="alternating engine/PyTorch rounds")
    parser.add_argument("--steps", type=int, default=10, help="steps per block")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--torch-python", default=str(ROOT / ".venv-torch" / "bin" / "python"))
    parser.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.torch_worker:
        torch_worker(args.warmup)
        return

    ours = engine_cases()
    for fn in ours.values():
        for _ in range(args.warmup):
            fn()
    worker = TorchWorker(args.torch_python, args.warmup) if Path(args.torch_python).exists() else None
    rows = {}
    for case, fn in ours.items():
        engine_t, torch_t, ratios = [], [], []
        for _ in range(args.rounds):
            time.sleep(PAUSE)
            engine_t.append(block_seconds(fn, args.steps))
            if worker:
                time.sleep(PAUSE)
                torch_t.append(worker.time(case, args.steps))
                ratios.append(torch_t[-1] / engine_t[-1])
        batch = DETECTOR_BATCH if case.startswith("det") else BATCH
        rows[case] = (
            batch / statistics.median(engine_t),
            batch / statistics.median(torch_t) if worker else None,
            statistics.median(ratios) if worker else None,
            (min(ratios), max(ratios)) if worker else None,
        )
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"batch {BATCH}, input 1x28x28 (det<size>: the detector's pair, batch {DETECTOR_BATCH}, 1x<size>x<size>); "
        f"{args.rounds} alternating rounds of {args.steps} steps (samples/s)"
    )
    print(f"{'case':<12}{'engine':>10}{'pytorch':>10}{'ratio':>8}  ratio range over rounds")
    for case, (e, t, r, span) in rows.items():
        if worker:
            print(f"{case:<12}{e:>10.0f}{t:>10.0f}{r:>8.2f}  {span[0]:.2f}-{span[1]:.2f}")
        else:
            print(f"{case:<12}{e:>10.0f}{'-':>10}{'-':>8}")
    if worker:
        print(f"pytorch {worker.info['torch_version']} with {worker.info['threads']} threads")
        worker.close()
    else:
        print("no PyTorch venv: run `make bench-torch-venv` to compare")
    print(f"peak RSS of the engine process: {peak_mb:.0f} MB (goal <= 400 MB)")


if __name__ == "__main__":
    main()
