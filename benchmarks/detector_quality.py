"""Detection quality on surfaces, as a line engineer would measure it (issue 13).

    python benchmarks/detector_quality.py                       # the made datasets (below)
    python benchmarks/detector_quality.py --data ~/mvtec_ad     # any MVTec AD layout: a root of categories or one
    python benchmarks/detector_quality.py --keep out/           # keep the made datasets to look at
    python benchmarks/detector_quality.py --seeds 3 --only granular  # the spread from run to run

For each category: ``appliance detector fit`` on ``train/good`` with its defaults (only ``--size``
is set, to the images' size), then ``appliance detector test`` through the bundle's ONNX graph:
image AUROC, pixel AUROC, AUPRO (FPR ≤ 0.3), the false-alarm rate on ``test/good`` at the
calibrated T2 next to the nominal rate, the share of defects flagged, training time; the plain
autoencoder (``--method autoencoder``) beside it (``--no-baseline`` skips it); then, per category,
each defect kind's image AUROC and share flagged, weakest first (where a category loses).

Without ``--data`` it makes MVTec-layout datasets from what ships with the dependencies: the two
real photographs in scikit-learn (trees from the temple photograph; the blurred leaves behind the
dahlia) and procedural materials (brushed metal, granular, woven), cut into
patches. Training and test parts come from interleaved strips of each surface, so the good test
parts are surface the detector never saw, from all over it; the photographs are small, so their
patches are also turned to any of 8 orientations (their textures have no direction). Defects are
painted with the benchmark's own painters, none of them the detector's training anomalies:
scratches, thin cracks, soft stains, blurred smudges and patches of a foreign but similar texture;
the colour categories add stains that differ only in hue. The synthetic line is a category too
(its own painted defects).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.datasets.images import test_folder  # noqa: E402
from appliance.workflows.detector import FitOptions, detector_report, fit  # noqa: E402
from connectors.synthetic import SyntheticLine  # noqa: E402

PATCH = 64
Painter = Callable[[np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


# -- surfaces -------------------------------------------------------------------------------------
def photographs() -> dict[str, np.ndarray]:
    """Surfaces cut from the two photographs in scikit-learn (BGR): the trees in the bottom right
    corner of the temple photograph (granular, irregular) and the blurred leaves behind the dahlia
    (smooth, low contrast). The dahlia itself is left out: its centre is unlike its rim, so test
    strips across it would hold a surface no training strip has."""
    from sklearn.datasets import load_sample_images

    temple, flower = (image[:, :, ::-1] for image in load_sample_images().images)  # RGB → BGR
    return {
        "foliage": temple[290:427, 380:640].copy(),
        "bokeh": flower[:, :165].copy(),
    }


def procedural(kind: str, rng: np.random.Generator, shape: tuple[int, int] = (480, 640)) -> np.ndarray:
    """Materials made from noise: brushed metal (streaks), granular (speckle), woven (threads)."""
    h, w = shape
    if kind == "brushed":
        noise = rng.normal(0, 1, (h, w)).astype(np.float32)
        streaks = cv2.GaussianBlur(noise, (0, 0), sigmaX=12, sigmaY=0.6)
        base = 0.55 + 0.9 * streaks + 0.03 * cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 30)
    elif kind == "granular":
        grains = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 1.2)
        base = (
            0.5
            + 0.12 * grains / grains.std()
            + 0.04 * cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 20)
        )
    else:  # woven
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        jitter = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 3) * 2
        weave = np.sin((xx + jitter) / 2.2) * np.sin((yy - jitter) / 2.2)
        base = 0.5 + 0.18 * weave + 0.05 * rng.normal(0, 1, (h, w))
    return (np.clip(base, 0, 1) * 255).astype(np.uint8)


# -- painted defects (none of them the detector's own training anomalies) --------------------------
def _blob(h: int, w: int, rng: np.random.Generator, radius: tuple[float, float]) -> np.ndarray:
    mask = np.zeros((h, w), np.float32)
    centre = (int(rng.integers(h // 5, 4 * h // 5)), int(rng.integers(w // 5, 4 * w // 5)))
    axes = (int(w * rng.uniform(*radius)), int(h * rng.uniform(*radius)))
    cv2.ellipse(mask, centre, axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    return mask


def scratch(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.float32)
    p0 = (int(rng.integers(0, w // 3)), int(rng.integers(0, h)))
    p1 = (int(rng.integers(2 * w // 3, w)), int(rng.integers(0, h)))
    cv2.line(mask, p0, p1, 1.0, int(rng.integers(1, 3)), cv2.LINE_AA)
    return _apply(img, mask, rng.choice([-1, 1]) * rng.uniform(0.25, 0.45)), mask


def crack(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    mask = np.zeros((h, w), np.float32)
    point = np.array([rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h])
    heading = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(8, 16))):
        heading += rng.normal(0, 0.6)
        nxt = np.clip(point + 3 * np.array([np.cos(heading), np.sin(heading)]), 0, [w - 1, h - 1])
        cv2.line(mask, tuple(int(v) for v in point), tuple(int(v) for v in nxt), 1.0, 1, cv2.LINE_8)
        point = nxt
    return _apply(img, mask, -rng.uniform(0.2, 0.4)), mask


def soft_stain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    blob = _blob(*img.shape[:2], rng, (0.08, 0.2))
    soft = cv2.GaussianBlur(blob, (0, 0), rng.uniform(2, 4))
    return _apply(img, soft, rng.choice([-1, 1]) * rng.uniform(0.1, 0.2)), (soft > 0.3).astype(np.float32)


def smudge(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    blob = _blob(*img.shape[:2], rng, (0.1, 0.22))
    soft = cv2.GaussianBlur(blob, (0, 0), 2)[..., None] if img.ndim == 3 else cv2.GaussianBlur(blob, (0, 0), 2)
    blurred = cv2.GaussianBlur(img, (0, 0), rng.uniform(2.5, 5))
    out = img.astype(np.float32) * (1 - soft) + blurred.astype(np.float32) * soft
    return np.clip(out, 0, 255).astype(np.uint8), (blob > 0).astype(np.float32)


def hue_stain(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Colour only: the hue turns, brightness stays (a grey camera cannot see it)."""
    blob = _blob(*img.shape[:2], rng, (0.1, 0.22))
    soft = cv2.GaussianBlur(blob, (0, 0), 1.5)
    hsv = cv2.cvtColor(img, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + soft * rng.uniform(25, 60)) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] + soft * 90, 0, 255)
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR), (blob > 0).astype(np.float32)


def _apply(img: np.ndarray, mask: np.ndarray, delta: float) -> np.ndarray:
    change = mask[..., None] if img.ndim == 3 else mask
    return np.clip(img.astype(np.float32) + 255 * delta * change, 0, 255).astype(np.uint8)


def foreign_texture(source: np.ndarray) -> Painter:
    """A patch of a similar but foreign texture: the same surface at another scale and angle."""

    def paint(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        h, w = img.shape[:2]
        scale = rng.choice([0.5, 1.8])
        span = min(2 * h, source.shape[0], source.shape[1])
        y, x = int(rng.integers(0, source.shape[0] - span + 1)), int(rng.integers(0, source.shape[1] - span + 1))
        other = cv2.resize(source[y : y + span, x : x + span], None, fx=scale, fy=scale)[:h, :w]
        other = np.rot90(other, int(rng.integers(1, 4)))[:h, :w]
        if other.shape[:2] != (h, w):
            other = cv2.resize(other, (w, h))
        blob = _blob(h, w, rng, (0.12, 0.25))
        soft = cv2.GaussianBlur(blob, (0, 0), 1.0)
        soft = soft[..., None] if img.ndim == 3 else soft
        out = img.astype(np.float32) * (1 - soft) + other.astype(np.float32) * soft
        return np.clip(out, 0, 255).astype(np.uint8), (blob > 0).astype(np.float32)

    return paint


# -- datasets in the MVTec AD layout --------------------------------------------------------------
def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def surface_category(
    root: Path, surface: np.ndarray, painters: dict[str, Painter], seed: int, counts: dict, turn: bool = False
) -> Path:
    """Strips across the surface's longer side, 1.25 patches wide, one for testing between two for
    training, again and again: the good test parts are surface the detector never saw (no pixel
    shared with a training patch), spread over the same surface as the training parts. Training
    parts are numbered in the order a camera scanning the surface strip by strip meets them (as a
    line's images are named by time), so the detector's ordered calibration choices
    (``--config '{"holdout_order": "blocks"}'`` or ``"latest"``) can be compared with its random one."""
    rng = np.random.default_rng(seed)
    if surface.shape[0] > surface.shape[1]:
        surface = np.swapaxes(surface, 0, 1).copy()
    h, w = surface.shape[:2]
    width = PATCH * 5 // 4
    strips = [(x, min(x + width, w)) for x in range(0, w - PATCH + 1, width)]
    train_strips = [s for k, s in enumerate(strips) if k % 3 != 1 and s[1] - s[0] >= PATCH]
    test_strips = [s for k, s in enumerate(strips) if k % 3 == 1 and s[1] - s[0] >= PATCH]

    def place(choices: list[tuple[int, int]]) -> tuple[int, int, int]:
        x0, x1 = choices[int(rng.integers(len(choices)))]
        return x0, int(rng.integers(0, h - PATCH + 1)), int(rng.integers(x0, x1 - PATCH + 1))

    def cut(where: tuple[int, int, int]) -> np.ndarray:
        _, y, x = where
        out = surface[y : y + PATCH, x : x + PATCH]
        if turn:  # a part in any of 8 orientations: a small photograph gives more distinct parts
            out = np.rot90(out[:, ::-1] if rng.random() < 0.5 else out, int(rng.integers(4)))
        return np.ascontiguousarray(out)

    def patch(choices: list[tuple[int, int]]) -> np.ndarray:
        return cut(place(choices))

    for i, where in enumerate(sorted(place(train_strips) for _ in range(counts["train"]))):  # scan order
        _write(root / "train" / "good" / f"{i:03d}.png", cut(where))
    for i in range(counts["good"]):
        _write(root / "test" / "good" / f"{i:03d}.png", patch(test_strips))
    for kind, paint in painters.items():
        for i in range(counts["defect"]):
            image, mask = paint(patch(test_strips), rng)
            _write(root / "test" / kind / f"{i:03d}.png", image)
            _write(root / "ground_truth" / kind / f"{i:03d}_mask.png", (mask > 0.5).astype(np.uint8) * 255)
    return root


def line_category(root: Path, counts: dict) -> Path:
    """The synthetic line at 64 px: its parts and their own painted defects."""
    for i, part in enumerate(SyntheticLine(PATCH, defect_rate=0.0, seed=21).take(counts["train"] + counts["good"])):
        split = "train" if i < counts["train"] else "test"
        _write(root / split / "good" / f"{i:03d}.png", part.image)
    for i, part in enumerate(SyntheticLine(PATCH, defect_rate=1.0, seed=22).take(5 * counts["defect"])):
        _write(root / "test" / part.defect / f"{i:03d}.png", part.image)
        _write(root / "ground_truth" / part.defect / f"{i:03d}_mask.png", part.mask)
    return root


def make_datasets(root: Path, counts: dict) -> list[tuple[Path, int]]:
    """The made categories with their channels."""
    photos = photographs()
    grey = {n: cv2.cvtColor(p, cv2.COLOR_BGR2GRAY) for n, p in photos.items()}
    rng = np.random.default_rng(0)
    materials = {n: procedural(n, rng) for n in ("brushed", "granular", "woven")}
    made = []
    for seed, (name, surface) in enumerate({**grey, **materials}.items()):
        painters = {"scratch": scratch, "crack": crack, "soft_stain": soft_stain, "smudge": smudge}
        painters["foreign_texture"] = foreign_texture(surface)
        made.append((surface_category(root / name, surface, painters, seed, counts, turn=name in grey), 1))
    for seed, name in enumerate(("foliage", "bokeh"), start=10):
        surface = photos[name]
        painters = {"hue_stain": hue_stain, "soft_stain": soft_stain, "foreign_texture": foreign_texture(surface)}
        made.append((surface_category(root / f"{name}-colour", surface, painters, seed, counts, turn=True), 3))
    made.append((line_category(root / "line", counts), 1))
    return made


def categories(data: Path) -> list[tuple[Path, int]]:
    """An MVTec AD root (one folder per category) or one category; colour where the images are."""
    roots = [data] if test_folder(data) else sorted(p for p in data.iterdir() if p.is_dir() and test_folder(p))
    out = []
    for root in roots:
        first = next((p for p in sorted((root / "train" / "good").glob("*")) if p.is_file()), None)
        image = cv2.imread(str(first), cv2.IMREAD_UNCHANGED) if first else None
        colour = image is not None and image.ndim == 3 and not np.allclose(image[..., 0], image[..., 1], atol=2)
        out.append((root, 3 if colour else 1))
    return out


# -- running ---------------------------------------------------------------------------------------
def evaluate(root: Path, channels: int, method: str, size: int, work: Path, tuning: dict, seed: int = 0) -> dict:
    bundle = work / f"{root.name}-{method}-seed{seed}.zip"
    start = time.monotonic()
    options = FitOptions(size=size, channels=channels, method=method, seed=seed, **tuning)
    fit(root / "train" / "good", bundle, options, log=lambda _: None)
    seconds = time.monotonic() - start
    report = detector_report(bundle, root, log=lambda _: None)
    return {**report, "train_seconds": seconds}


def over_seeds(runs: list[dict]) -> dict:
    """The runs' mean of every figure the table shows, with each AUROC's range across the seeds."""
    keys = ("image_auroc", "pixel_auroc", "aupro", "false_alarm_rate", "defects_flagged", "train_seconds")
    out = {k: float(np.mean([r[k] for r in runs])) if all(r.get(k) is not None for r in runs) else None for k in keys}
    out["nominal_false_alarm_rate"] = runs[0]["nominal_false_alarm_rate"]
    if len(runs) > 1:
        out["range"] = {k: [min(r[k] for r in runs), max(r[k] for r in runs)] for k in keys[:3] if out[k] is not None}
    return out


def row(name: str, method: str, r: dict) -> str:
    def f(key: str) -> str:
        v = r.get(key)
        if not isinstance(v, float):
            return "  -  "
        spread = r.get("range", {}).get(key)
        return f"{v:.3f}" + (f" ({spread[0]:.3f}–{spread[1]:.3f})" if spread else "")

    fa = f"{100 * r['false_alarm_rate']:.1f} % / {100 * r['nominal_false_alarm_rate']:.0f} %"
    return (
        f"| {name} | {method} | {f('image_auroc')} | {f('pixel_auroc')} | {f('aupro')} | {fa} | "
        f"{100 * r['defects_flagged']:.1f} % | {r['train_seconds']:.0f} s |"
    )


def per_kind(name: str, method: str, r: dict) -> str:
    """One line: each defect kind's image AUROC and share flagged (the mean over the seeds'
    runs), weakest first, so that what a category loses on shows beside its table row."""
    runs = r.get("runs", [r])
    kinds: dict[str, list[tuple[float, float]]] = {}
    for run in runs:
        for kind, k in run.get("per_defect", {}).items():
            if k.get("image_auroc") is not None:
                kinds.setdefault(kind, []).append((k["image_auroc"], k["flagged"]))
    means = {kind: np.mean(v, axis=0) for kind, v in kinds.items()}
    cells = [f"{kind} {a:.3f} ({100 * f:.0f} %)" for kind, (a, f) in sorted(means.items(), key=lambda kv: kv[1][0])]
    return f"{name} {method}: " + ", ".join(cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="an MVTec AD root or category (default: the made datasets)")
    parser.add_argument("--keep", type=Path, help="write the made datasets here and keep them")
    parser.add_argument("--size", type=int, help="detector input size (default: the patches' 64, or 128 for --data)")
    parser.add_argument("--train", type=int, default=200, help="training patches per made category")
    parser.add_argument("--no-baseline", action="store_true", help="skip the plain autoencoder")
    parser.add_argument("--only", help="comma-separated category names to run")
    parser.add_argument("--json", type=Path, help="also write every report here")
    parser.add_argument("--models", type=Path, help="keep the fitted bundles here")
    parser.add_argument("--epochs", type=int, help="override fit's default epochs (experiments only)")
    parser.add_argument("--config", help="DetectorConfig overrides as JSON (experiments only)")
    parser.add_argument(
        "--seeds", type=int, default=1, help="fit each category with this many seeds: mean, and (min–max) per AUROC"
    )
    parser.add_argument("--first-seed", type=int, default=0, help="seeds run from this one")
    args = parser.parse_args()
    counts = {"train": args.train, "good": 60, "defect": 12}
    methods = ["draem"] + ([] if args.no_baseline else ["autoencoder"])
    with tempfile.TemporaryDirectory() as tmp:
        work = args.models or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if args.data:
            cats, size = categories(args.data), args.size or 128
        else:
            cats, size = make_datasets(args.keep or work / "data", counts), args.size or PATCH
        if args.only:
            cats = [(root, ch) for root, ch in cats if root.name in args.only.split(",")]
        head = ("category", "method", "image AUROC", "pixel AUROC", "AUPRO", "false alarms seen / nominal")
        print("| " + " | ".join((*head, "defects flagged", "training")) + " |")
        print("|---|---|---|---|---|---|---|---|")
        results: dict[str, dict] = {}
        for root, channels in cats:
            for method in methods:
                tuning = {"epochs": args.epochs} if args.epochs else {}
                if args.config:
                    tuning["extra"] = json.loads(args.config)
                runs = [
                    evaluate(root, channels, method, size, work, tuning, seed)
                    for seed in range(args.first_seed, args.first_seed + args.seeds)
                ]
                r = runs[0] if args.seeds == 1 else {**over_seeds(runs), "runs": runs}
                results[f"{root.name}/{method}"] = r
                print(row(f"{root.name} ({'colour' if channels == 3 else 'grey'})", method, r), flush=True)
        for method in methods:
            rs = [r for k, r in results.items() if k.endswith(f"/{method}")]
            means = {
                k: np.mean([r[k] for r in rs if r.get(k) is not None]) for k in ("image_auroc", "pixel_auroc", "aupro")
            }
            print(f"mean {method}: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()))
        print("per defect kind, weakest first: image AUROC (defects flagged)")
        for key, r in results.items():
            print(per_kind(*key.split("/"), r))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2, default=str))
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
