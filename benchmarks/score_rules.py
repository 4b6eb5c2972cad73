"""Which image-score rule separates good from defective parts best, on fitted detectors (issue 13).

    python benchmarks/detector_quality.py --keep DATA --models MODELS --no-baseline   # fit first
    python benchmarks/score_rules.py --data DATA --models MODELS

For every ``<category>-draem-seed<k>.zip`` in MODELS (the names ``detector_quality.py`` gives its
bundles) and the MVTec-layout category of that name under DATA, scores the test images once through
the bundle's ONNX graph and prints the image AUROC of each rule: the top-k mean of the smoothed
defect map for a grid of k (share of pixels) and smoothing sigma (the served rule is one of them:
the bundle's own is marked), the map's mean, the reconstruction error alone, and the larger of the
two after normalising each on the held-out good images the detector was calibrated on. A study of
the served rule, not a tuning knob: a rule that wins on one category and loses on the next is noise.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.datasets.images import mvtec_layout, read_all, test_folder  # noqa: E402
from appliance.workflows.detector import load_images  # noqa: E402
from models.detector.model import Detector, DetectorConfig  # noqa: E402
from models.inference import Inferencer  # noqa: E402
from models.metrics import image_auroc  # noqa: E402
from models.preprocess import preprocess_batch  # noqa: E402
from models.scoring import image_scores, reconstruction_error_maps  # noqa: E402

TOP_K = (0.001, 0.005, 0.02, 0.05)
SIGMA = (0.0, 1.0, 2.0, 4.0)


def maps(model: Inferencer, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
    """Defect maps and reconstruction-error maps, (N, H, W) each."""
    defect, error = [], []
    for _, images in read_all(paths):
        x = preprocess_batch(images, model.input_spec)
        out = dict(zip(model.output_names, model.session.run(None, {"input": x}), strict=True))
        defect.append(out["anomaly_map"][:, 0])
        error.append(reconstruction_error_maps(x, out["reconstruction"]))
    return np.concatenate(defect), np.concatenate(error)


def rules(model: Inferencer, category: Path) -> dict[str, float]:
    layout = mvtec_layout(category)
    defective = np.array([item.defect != "good" for item in layout.test])
    test_map, test_error = maps(model, [item.path for item in layout.test])
    # the images fit held out for calibration, chosen as fit chose them
    train = load_images(layout.train, model.input_spec)  # as fit read them
    config = {"holdout_twins": False, **model.meta["provenance"]["config"]}  # bundles fit before twins were looked for
    held = Detector(DetectorConfig(**config)).holdout(train).held
    held_map, held_error = maps(model, [layout.train[i] for i in held])
    out = {}
    for k in TOP_K:
        for sigma in SIGMA:
            served = np.isclose(k, model.top_k) and np.isclose(sigma, model.sigma)
            out[f"map top {k:g}, sigma {sigma:g}" + (" (served)" if served else "")] = image_auroc(
                image_scores(test_map, k, sigma), defective
            )
    out["map mean"] = image_auroc(test_map.reshape(len(test_map), -1).mean(axis=1), defective)

    def normalised(test: np.ndarray, held_out: np.ndarray, k: float, sigma: float) -> np.ndarray:
        """Scores in units of the held-out good images' spread (median → 0, 90th percentile → 1)."""
        t, h = image_scores(test, k, sigma), image_scores(held_out, k, sigma)
        return (t - np.median(h)) / (np.quantile(h, 0.9) - np.median(h) + 1e-12)

    for k, sigma in ((0.005, 2.0), (0.02, 2.0)):
        out[f"reconstruction error top {k:g}, sigma {sigma:g}"] = image_auroc(
            image_scores(test_error, k, sigma), defective
        )
        fused = np.maximum(
            normalised(test_map, held_map, model.top_k, model.sigma), normalised(test_error, held_error, k, sigma)
        )
        out[f"max(served map, error top {k:g} sigma {sigma:g}), normalised"] = image_auroc(fused, defective)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="MVTec-layout root holding one folder per category")
    parser.add_argument("--models", type=Path, required=True, help="the bundles detector_quality.py kept")
    args = parser.parse_args()
    table: dict[str, dict[str, float]] = {}
    for bundle in sorted(args.models.glob("*-draem-seed*.zip")):
        name = re.sub(r"-draem-seed\d+$", "", bundle.stem)
        if test_folder(args.data / name) is None:
            print(f"skipped {bundle.name}: no category {args.data / name}", file=sys.stderr)
            continue
        table[bundle.stem] = rules(Inferencer(bundle), args.data / name)
    if not table:
        parser.error(f"no <category>-draem-seed<k>.zip in {args.models} with its category under {args.data}")
    first = next(iter(table.values()))
    print("| rule | " + " | ".join(table) + " | mean |")
    print("|---" * (len(table) + 2) + "|")
    for rule in first:
        values = [table[c][rule] for c in table]
        print(f"| {rule} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.4f} |")


if __name__ == "__main__":
    main()
