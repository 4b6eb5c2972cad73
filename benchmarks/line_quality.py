"""Detection quality on the synthetic line: the detector (DRAEM-style) against a plain conv
autoencoder of the same size, image and pixel AUROC per defect kind.

    python benchmarks/line_quality.py [--size 64] [--epochs 60] [--train 400] [--test 400]

Both train on normal parts only; the test parts carry the line's painted defects (scratch,
stain, crack, dent, contamination), which the detector's own synthetic anomalies do not imitate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from connectors.synthetic import SyntheticLine  # noqa: E402
from models.detector.model import Detector, DetectorConfig  # noqa: E402
from models.metrics import per_kind_auroc  # noqa: E402
from models.preprocess import InputSpec, preprocess_batch  # noqa: E402


def report_defect_types(detector: Detector, spec: InputSpec, args: argparse.Namespace) -> None:
    """Train the type head on labelled defective parts; accuracy on other defective parts."""
    names = sorted({"scratch", "stain", "crack", "dent", "contamination"})
    labelled = SyntheticLine(args.frame, defect_rate=1.0, seed=3).take(args.typed)
    held = SyntheticLine(args.frame, defect_rate=1.0, seed=4).take(200)
    x, y = preprocess_batch([p.image for p in labelled], spec), [names.index(p.defect) for p in labelled]
    detector.fit_defect_types(x, np.array(y), names, epochs=40)
    features = np.concatenate([preprocess_batch([p.image for p in held], spec)], axis=0)
    maps = detector.anomaly_maps(features)
    from engine import no_grad

    with no_grad():
        head = detector.type_head.module
        head.eval()
        logits = head(np.concatenate([features, maps[:, None]], axis=1).astype(np.float32)).data
    predicted = logits.argmax(axis=1)
    truth = np.array([names.index(p.defect) for p in held])
    per_kind = {n: float(np.mean(predicted[truth == i] == i)) for i, n in enumerate(names)}
    print(
        f"defect-type accuracy on {len(held)} held-out defective parts: {np.mean(predicted == truth):.3f} "
        + " ".join(f"{k}={v:.2f}" for k, v in per_kind.items())
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--crop", type=int, default=64, help="training crop (the networks are fully convolutional)")
    parser.add_argument("--frame", type=int, default=128, help="line frame size before resizing")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=400)
    parser.add_argument("--methods", default="autoencoder,draem")
    parser.add_argument("--typed", type=int, default=200, help="labelled defective parts for the defect-type head")
    args = parser.parse_args()

    spec = InputSpec(kind="image", channels=1, size=(args.size, args.size))
    train = SyntheticLine(args.frame, defect_rate=0.0, seed=1).take(args.train)
    test = SyntheticLine(args.frame, defect_rate=0.5, seed=2).take(args.test)
    x_train = preprocess_batch([p.image for p in train], spec)
    x_test = preprocess_batch([p.image for p in test], spec)
    masks = np.stack([cv2.resize(p.mask, (args.size, args.size), interpolation=cv2.INTER_AREA) > 64 for p in test])
    kinds = [p.defect for p in test]
    print(
        f"{len(train)} normal training parts, {len(test)} test parts "
        f"({sum(k is not None for k in kinds)} defective), {args.size}x{args.size}, {args.epochs} epochs"
    )
    results = {}
    for method in args.methods.split(","):
        crop = args.crop if args.crop < args.size else None
        detector = Detector(DetectorConfig(method=method, size=args.size, crop=crop, epochs=args.epochs))
        start = time.perf_counter()
        detector.fit(x_train)
        seconds = time.perf_counter() - start
        maps = detector.anomaly_maps(x_test)
        from models.scoring import image_scores

        scores = image_scores(maps, detector.config.top_k, detector.config.sigma)
        results[method] = per_kind_auroc(scores, maps, masks, kinds)
        print(f"{method}: trained in {seconds:.0f} s")
        if method == "draem" and args.typed:
            report_defect_types(detector, spec, args)
    kinds_sorted = list(next(iter(results.values())))
    print(f"\n{'defect kind':<15}" + "".join(f"{m + ' image':>20}{m + ' pixel':>20}" for m in results))
    for kind in kinds_sorted:
        row = "".join(
            f"{results[m][kind]['image_auroc']:>20.3f}{results[m][kind]['pixel_auroc']:>20.3f}" for m in results
        )
        print(f"{kind:<15}{row}")


if __name__ == "__main__":
    main()
