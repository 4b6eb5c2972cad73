"""Sensor and tabular detection quality against PyOD, on the same splits.

Tabular one-class benchmarks from scikit-learn's data: the normal class(es), 70 % for training,
the rest of them plus every other class for test; several random splits (``--seeds``). Sensor
windows: NNC's sine-wave tutorial (``appliance dataset sample sine_anomaly``) and a simulated
three-axis vibration sensor with bearing, imbalance and looseness faults (documented in
:func:`vibration`), scored per window and per point (a point gets the largest score of the windows
that cover it) with AUROC and VUS-PR.

Every score of ours is served through the bundle's ONNX graph (onnxruntime), thresholds from the
bundle's calibration: "false alarms" is the observed NG rate of the test's normal items at the
nominal 1 %.

PyOD is the reference, in its own venv (``make bench-pyod-venv``); its detectors run with their
defaults on raw and on standardised features and the best of them per benchmark is reported.

    python benchmarks/vector_quality.py [--seeds 5] [--pyod .venv-pyod/bin/python]

This file's top level imports numpy and scikit-learn only, so the PyOD venv can run it
(``--pyod-only`` prints PyOD's results as JSON).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from sklearn import datasets
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
OURS = ("kde", "knn", "gauss", "ensemble", "dense")  # kde: the default
PYOD = ("KNN", "LOF", "IForest", "OCSVM", "PCA", "ECOD", "COPOD", "HBOS")


# -- data (shared with the PyOD run) ------------------------------------------------------------
def one_class(x, y, normal, seed, train_share=0.7):
    rng = np.random.default_rng(seed)
    idx = np.flatnonzero(np.isin(y, normal))
    rng.shuffle(idx)
    train = idx[: int(round(train_share * len(idx)))]
    test = np.setdiff1d(np.arange(len(y)), train)
    return x[train].astype(np.float64), x[test].astype(np.float64), (~np.isin(y[test], normal)).astype(int)


def tabular(seed: int) -> dict[str, tuple]:
    d, b, w = datasets.load_digits(), datasets.load_breast_cancer(), datasets.load_wine()
    out = {"digits, 4 and 9 normal": one_class(d.data, d.target, [4, 9], seed)}
    for c in range(10):
        out[f"digits, {c} normal"] = one_class(d.data, d.target, [c], seed)
    out["breast cancer, benign normal"] = one_class(b.data, b.target, [1], seed)
    out["wine, class 0 normal"] = one_class(w.data, w.target, [0], seed)
    return out


def vibration(n: int, rng: np.random.Generator, faults: int = 0, fs: float = 1000.0):
    """A three-axis accelerometer on a machine turning at 24.3 Hz: x and y carry the 1× and 2×
    orders in quadrature, z a weak 1×, all with broadband noise. Faults (100 to 300 rows each):
    ``bearing`` (impacts at 87 Hz ringing at 300 Hz on every axis), ``imbalance`` (1× grows by 60 %
    on x and y), ``looseness`` (3× and 4× orders appear, x clipped)."""
    t = np.arange(n) / fs
    w = 2 * np.pi * 24.3
    x = np.stack(
        [
            np.sin(w * t) + 0.3 * np.sin(2 * w * t + 0.4),
            np.cos(w * t) + 0.3 * np.cos(2 * w * t + 0.4),
            0.2 * np.sin(w * t + 1.0),
        ],
        axis=1,
    ) + 0.08 * rng.normal(size=(n, 3))
    labels = np.zeros(n, bool)
    kinds = ["bearing", "imbalance", "looseness"]
    starts = rng.choice(np.arange(200, n - 400, 500), size=faults, replace=False) if faults else []
    for i, s in enumerate(starts):
        length = int(rng.integers(100, 301))
        seg, tt = slice(s, s + length), t[s : s + length]
        kind = kinds[i % 3]
        if kind == "bearing":
            phase = (tt * 87) % 1 / 87
            x[seg] += (0.6 * np.exp(-phase * 150) * np.sin(2 * np.pi * 300 * phase))[:, None]
        elif kind == "imbalance":
            x[seg, 0] += 0.6 * np.sin(w * tt)
            x[seg, 1] += 0.6 * np.cos(w * tt)
        else:
            x[seg, :2] += (0.25 * np.sin(3 * w * tt) + 0.2 * np.sin(4 * w * tt))[:, None]
            x[seg, 0] = np.clip(x[seg, 0], -1.1, 1.1)
        labels[seg] = True
    return x.astype(np.float32), labels


def windows(data, labels, length, hop):
    starts = np.arange(0, len(data) - length + 1, hop)
    return (
        np.stack([data[s : s + length].T for s in starts]),
        np.array([labels[s : s + length].any() for s in starts]),
        starts,
    )


def sensor(seed: int) -> dict[str, dict]:
    """Sensor benchmarks: readings → (C, L) windows, with per-point labels."""
    sys.path.insert(0, str(ROOT))
    from appliance.datasets.create import sine_readings

    rng = np.random.default_rng(seed)
    out = {}
    normal, _ = sine_readings(4096, rng)
    test, lab = sine_readings(4096, rng, bursts=24)
    out["NNC sine wave, noise bursts"] = (normal[:, None], test[:, None], np.array([v != "ok" for v in lab]), 64, 16)
    normal, _ = vibration(16000, rng)
    test, lab = vibration(16000, rng, faults=18)
    out["vibration, 3 axes, 3 fault kinds"] = (normal, test, lab, 64, 16)
    return out


# -- PyOD (in its own venv) ---------------------------------------------------------------------
def pyod_scores(train: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    import importlib

    from sklearn.preprocessing import StandardScaler

    modules = {
        "KNN": "knn",
        "LOF": "lof",
        "IForest": "iforest",
        "OCSVM": "ocsvm",
        "PCA": "pca",
        "ECOD": "ecod",
        "COPOD": "copod",
        "HBOS": "hbos",
    }
    out = {}
    scaler = StandardScaler().fit(train)
    for scaling, (a, b) in {
        "raw": (train, test),
        "standardised": (scaler.transform(train), scaler.transform(test)),
    }.items():
        for name, module in modules.items():
            cls = getattr(importlib.import_module(f"pyod.models.{module}"), name)
            model = cls(random_state=0) if name == "IForest" else cls()
            try:
                model.fit(a)
                out[f"{name} ({scaling})"] = model.decision_function(b)
            except Exception as exc:  # a detector that cannot fit this data is left out, named
                print(f"PyOD {name} ({scaling}) failed: {exc}", file=sys.stderr)
    return out


def pyod_only(seeds: int, sensor_file: str) -> None:
    """PyOD's AUROCs as JSON; the sensor windows come from ``sensor_file`` (written by the main run,
    whose generators need the project's own dependencies)."""
    warnings.filterwarnings("ignore")
    results: dict[str, dict] = {}
    for seed in range(seeds):
        for name, (train, test, y) in tabular(seed).items():
            for det, s in pyod_scores(train, test).items():
                results.setdefault(name, {}).setdefault(det, []).append(float(roc_auc_score(y, s)))
    with np.load(sensor_file) as data:
        names = json.loads(str(data["names"]))
        for i, name in enumerate(names):
            xn, xt, yt = data[f"{i}_normal"], data[f"{i}_test"], data[f"{i}_labels"]
            for det, s in pyod_scores(xn.reshape(len(xn), -1), xt.reshape(len(xt), -1)).items():
                results.setdefault(name, {})[det] = [float(roc_auc_score(yt, s))]
                results[name].setdefault("_scores", {})[det] = list(map(float, s))
    json.dump(results, sys.stdout)


# -- ours --------------------------------------------------------------------------------------
def served(model: str, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray, dict, float]:
    from models.detector.vector import VectorDetector, VectorDetectorConfig
    from models.inference import Inferencer

    detector = VectorDetector(VectorDetectorConfig(shape=train.shape[1:], model=model))
    start = time.perf_counter()
    summary = detector.fit(train)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.zip"
        detector.to_bundle().save(path)
        inferencer = Inferencer(path)
        results = [r for i in range(0, len(test), 512) for r in inferencer.predict_batch(list(test[i : i + 512]))]
    scores = np.array([r.score for r in results])
    ng = np.array([r.decision == "ng" for r in results])
    return scores, ng, summary, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pyod", default=str(ROOT / ".venv-pyod" / "bin" / "python"))
    parser.add_argument("--pyod-only", metavar="SENSOR_NPZ", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pyod_only:
        pyod_only(args.seeds, args.pyod_only)
        return
    sys.path.insert(0, str(ROOT))
    from models.metrics import point_scores, vus_pr

    started = time.perf_counter()
    sensors = {}
    for name, (normal, test, labels, length, hop) in sensor(0).items():
        xn, _, _ = windows(normal, np.zeros(len(normal), bool), length, hop)
        xt, yt, starts = windows(test, labels, length, hop)
        sensors[name] = (xn, xt, yt, starts, labels, length)
    pyod = {}
    if Path(args.pyod).exists():
        with tempfile.TemporaryDirectory() as tmp:
            npz = Path(tmp) / "sensors.npz"
            arrays = {}
            for i, (xn, xt, yt, *_) in enumerate(sensors.values()):
                arrays |= {f"{i}_normal": xn, f"{i}_test": xt, f"{i}_labels": yt}
            np.savez(npz, names=json.dumps(list(sensors)), **arrays)
            command = [args.pyod, __file__, "--pyod-only", str(npz), "--seeds", str(args.seeds)]
            pyod = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    else:
        print(f"no PyOD venv at {args.pyod} (make bench-pyod-venv): PyOD columns left empty")

    def best_pyod(name: str, scaling: str = "") -> tuple[float, str]:
        dets = {k: np.mean(v) for k, v in pyod.get(name, {}).items() if not k.startswith("_") and scaling in k}
        return max((v, k) for k, v in dets.items()) if dets else (float("nan"), "-")

    print(f"\n## Tabular one-class benchmarks (mean of {args.seeds} random splits; AUROC served through ONNX)\n")
    print(
        "| benchmark | train n | "
        + " | ".join(OURS)
        + " | best PyOD | best PyOD, raw | best PyOD, standardised | false alarms at nominal 1 % (kde) |"
    )
    print("|---|---|" + "---|" * len(OURS) + "---|---|---|---|")
    rows: dict[str, dict[str, list]] = {}
    for seed in range(args.seeds):
        for name, (train, test, y) in tabular(seed).items():
            row = rows.setdefault(name, {"n": len(train)})
            for model in OURS:
                scores, ng, summary, _ = served(model, train, test)
                row.setdefault(model, []).append(roc_auc_score(y, scores))
                row.setdefault(f"{model} fa", []).append((ng[y == 0].sum(), (y == 0).sum()))
    digits_rows = [rows[f"digits, {c} normal"] for c in range(10)]
    summary_rows = {k: v for k, v in rows.items() if not k.startswith("digits, ") or "4 and 9" in k}
    summary_rows["digits, one class normal (mean of 10)"] = {
        "n": int(np.mean([r["n"] for r in digits_rows])),
        **{m: [np.mean([np.mean(r[m]) for r in digits_rows])] for m in OURS},
        **{f"{m} fa": sum((r[f"{m} fa"] for r in digits_rows), []) for m in OURS},
    }
    pyod_digits = {}
    for c in range(10):
        for det, v in pyod.get(f"digits, {c} normal", {}).items():
            pyod_digits.setdefault(det, []).append(np.mean(v))
    pyod["digits, one class normal (mean of 10)"] = pyod_digits
    wins = 0
    order = ["digits, 4 and 9 normal", "digits, one class normal (mean of 10)", "breast cancer, benign normal"]
    for name in [*order, "wine, class 0 normal"]:
        row = summary_rows[name]
        ref, ref_name = best_pyod(name)
        fa = np.array(row["kde fa"])
        ours = {m: float(np.mean(row[m])) for m in OURS}
        wins += ours["kde"] >= ref
        cells = " | ".join(f"{ours[m]:.4f}" for m in OURS)
        raw, std = best_pyod(name, "(raw)"), best_pyod(name, "(standardised)")
        print(
            f"| {name} | {row['n']} | {cells} | {ref:.4f} {ref_name} | {raw[0]:.4f} {raw[1].split()[0]} | "
            f"{std[0]:.4f} {std[1].split()[0]} | "
            f"{fa[:, 0].sum() / fa[:, 1].sum():.2%} ({fa[:, 0].sum()} of {fa[:, 1].sum()}) |"
        )
    worst_class = max(range(10), key=lambda c: sum(a for a, _ in rows[f"digits, {c} normal"]["kde fa"]))
    wf = np.array(rows[f"digits, {worst_class} normal"]["kde fa"])
    print(f"\nkde (the default) >= the best PyOD detector on {wins} of 4 benchmarks.")
    print(f"Worst digit class for false alarms: {worst_class}: {wf[:, 0].sum() / wf[:, 1].sum():.2%} at nominal 1 %.")

    print("\n## Sensor windows (window 64, hop 16; AUROC per window and per point, VUS-PR per point)\n")
    print("| benchmark | model | window AUROC | point AUROC | VUS-PR | false alarms (windows) | fit s |")
    print("|---|---|---|---|---|---|---|")
    for name, (xn, xt, yt, starts, labels, length) in sensors.items():
        test_len = len(labels)
        for model in ("kde", "knn", "gauss", "ensemble", "conv1d"):
            scores, ng, _, seconds = served(model, xn, xt)
            points = point_scores(scores, starts, length, test_len)
            print(
                f"| {name} | {model} | {roc_auc_score(yt, scores):.4f} | {roc_auc_score(labels, points):.4f} | "
                f"{vus_pr(labels, points, 2 * length):.4f} | {ng[~yt].mean():.2%} | {seconds:.1f} |"
            )
        for det, s in pyod.get(name, {}).get("_scores", {}).items():
            if det.split()[0] in ("KNN", "IForest", "PCA", "OCSVM"):
                points = point_scores(np.array(s), starts, length, test_len)
                print(
                    f"| {name} | PyOD {det} | {pyod[name][det][0]:.4f} | {roc_auc_score(labels, points):.4f} | "
                    f"{vus_pr(labels, points, 2 * length):.4f} | - | - |"
                )
    import resource

    print(
        f"\npeak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (this process), "
        f"{time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
