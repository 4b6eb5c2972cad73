"""Detector timing: training time, and serving latency (p50/p99) and throughput at batch 1 and 16
for 128×128 grey frames through onnxruntime, preprocessing and post-processing included.

    python benchmarks/detector_bench.py [--size 128] [--images 120] [--epochs 2] [--runs 300]

Goal (issue 4): p99 ≤ 15 ms at batch 1 on this 2-core machine. Training here is short (timing
only); detection quality is measured by benchmarks/detector_quality.py.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.synthetic import SyntheticLine  # noqa: E402
from models.detector.model import Detector, DetectorConfig  # noqa: E402
from models.inference import Inferencer  # noqa: E402
from models.preprocess import InputSpec, preprocess_batch  # noqa: E402


def latency(inferencer: Inferencer, frames: list[np.ndarray], batch: int, runs: int) -> tuple[float, float, float]:
    """p50 and p99 of one call in ms, and items per second."""
    for i in range(5):
        inferencer.predict_batch(frames[i : i + batch])
    times = []
    for i in range(runs):
        chunk = [frames[(i * batch + j) % len(frames)] for j in range(batch)]
        start = time.perf_counter()
        inferencer.predict_batch(chunk)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    p50, p99 = statistics.median(times), times[min(len(times) - 1, int(0.99 * len(times)))]
    return p50, p99, batch * 1000 / statistics.mean(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=120)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()

    spec = InputSpec(kind="image", channels=1, size=(args.size, args.size))
    frames = [p.image for p in SyntheticLine(size=args.size, defect_rate=0.0, seed=1).take(args.images)]
    x = preprocess_batch(frames, spec)
    crop = 64 if args.size > 64 else None
    detector = Detector(DetectorConfig(size=args.size, crop=crop, epochs=args.epochs))
    start = time.perf_counter()
    detector.fit(x)
    train_s = time.perf_counter() - start
    per_epoch = train_s / args.epochs
    print(
        f"training: {train_s:.1f} s for {args.epochs} epochs of {len(x)} images at {args.size}x{args.size} "
        f"({per_epoch:.1f} s/epoch, {per_epoch / len(x) * 1000:.1f} ms/image; includes calibration)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "detector.zip"
        detector.to_bundle(spec).save(path)
        for threads in (1, 2):
            inferencer = Inferencer(path, threads=threads)
            for batch in (1, 16):
                p50, p99, rate = latency(inferencer, frames, batch, max(30, args.runs // batch))
                print(
                    f"onnxruntime {threads} thread(s), batch {batch:>2}: p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                    f"{rate:7.1f} frames/s"
                )
    print("goal: p99 <= 15 ms at batch 1")


if __name__ == "__main__":
    main()
