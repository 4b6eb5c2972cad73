"""Structure search on ten-class digits from the binary-CNN base: random mutation (NNC's default)
against the model-based method at the same trial budget, several seeds.

    python benchmarks/search_bench.py [--trials 20] [--epochs 10] [--seeds 0 1 2] [--workers 2]

Per search it prints the base network's error and multiply-adds, whether a trial beat the base on
both, the best error among trials lighter than the base, the best error overall, and the
hypervolume of the Pareto front in (log10 multiply-adds, error) up to the reference point
(log10 of twice the base's multiply-adds, twice the base's error): one number for the whole front,
larger is better.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.datasets import create_sample  # noqa: E402
from appliance.workflows.search import search  # noqa: E402
from models.search import hypervolume  # noqa: E402


def summarize(rows: list[dict]) -> dict[str, float]:
    base = next(r for r in rows if r["trial"] == 0)
    done = [r for r in rows if r["status"] == "done" and r["error"] is not None]
    lighter = [r for r in done if r["multiply_adds"] < base["multiply_adds"]]
    reference = (math.log10(2 * base["multiply_adds"]), 2 * base["error"])
    return {
        "base_error": base["error"],
        "base_madds": base["multiply_adds"],
        "beats_base": any(r["error"] < base["error"] for r in lighter),
        "best_lighter": min((r["error"] for r in lighter), default=float("nan")),
        "best": min(r["error"] for r in done),
        "hypervolume": hypervolume([(math.log10(r["multiply_adds"]), r["error"]) for r in done], reference),
        "stopped_early": sum(r["status"] == "stopped_early" for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=["random", "bayes"])
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="search-bench-"))
    create_sample("digits", work / "digits")
    project = {
        "network": {"zoo": "binary_cnn"},
        "dataset": {"training": "digits/training.csv", "validation": "digits/validation.csv"},
        "config": {"max_epoch": args.epochs, "batch_size": 64, "solver": {"type": "Adam", "lr": 0.001}},
    }
    (work / "project.yaml").write_text(yaml.safe_dump(project))
    print(f"digits (10 classes), base binary_cnn, {args.trials} trials of {args.epochs} epochs, {args.workers} workers")
    results: dict[str, list[dict]] = {m: [] for m in args.methods}
    for seed in args.seeds:
        for method in args.methods:  # interleaved, so machine noise hits both alike
            start = time.perf_counter()
            res = search(
                work / "project.yaml",
                work / f"{method}-{seed}",
                overrides={"method": method, "max_trials": args.trials, "workers": args.workers, "seed": seed},
                log=None,
            )
            s = summarize(res.trials) | {"minutes": (time.perf_counter() - start) / 60}
            results[method].append(s)
            print(
                f"{method:>6} seed {seed}: base {s['base_error']:.4f} @ {s['base_madds']:,}; "
                f"beats base on both: {s['beats_base']}; best lighter {s['best_lighter']:.4f}; "
                f"best {s['best']:.4f}; hypervolume {s['hypervolume']:.4f}; "
                f"stopped early {s['stopped_early']}; {s['minutes']:.1f} min",
                flush=True,
            )
    print("\nmethod  searches  beat-base  mean best-lighter  mean best  mean hypervolume")
    for method, runs in results.items():
        print(
            f"{method:>6}  {len(runs):8d}  {sum(r['beats_base'] for r in runs):9d}  "
            f"{statistics.fmean(r['best_lighter'] for r in runs):17.4f}  "
            f"{statistics.fmean(r['best'] for r in runs):9.4f}  "
            f"{statistics.fmean(r['hypervolume'] for r in runs):16.4f}"
        )
    print(f"(search folders in {work})")


if __name__ == "__main__":
    main()
