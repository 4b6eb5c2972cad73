"""``appliance detector fit | test | predict`` on a folder of real-looking parts (tests/helpers/parts)."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.cli import main
from appliance.datasets.images import mvtec_layout
from models import bundle as bundle_io
from models.detector.model import Detector
from tests.helpers.parts import make_parts

REPORT_KEYS = {
    "image_auroc",
    "pixel_auroc",
    "aupro",
    "false_alarm_rate",
    "nominal_false_alarm_rate",
    "defects_flagged",
    "per_defect",
}


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_parts(tmp_path_factory.mktemp("parts") / "washer", train=60, test_good=24, per_defect=8, size=64)


@pytest.fixture(scope="module")
def fitted(parts: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "washer.zip"
    args = ["detector", "fit", "--normal", str(parts / "train" / "good"), "--size", "64", "--epochs", "60"]
    # 20 held-out parts support a 5 % rate; 1 % would be extrapolated from their tail (and warned about)
    assert main([*args, "--method", "autoencoder", "--false-alarm-rate", "0.05", "-o", str(out)]) == 0
    return out


def test_fit_trains_from_scratch_on_nested_mixed_format_images_and_calibrates_on_held_out_ones(
    fitted: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = bundle_io.load(fitted)
    prov = bundle.meta["provenance"]
    assert prov["normal_images"] == 60  # png, jpg and 16-bit tif under three subfolders
    assert prov["fit"]["train_images"] + prov["fit"]["holdout_images"] == 60
    assert prov["fit"]["twins_left_out"] == 0  # washers all look alike: held out at random
    assert prov["fit"]["orientations"] == [0]  # parts in a fixture: trained as they come
    assert prov["fit"]["holdout_images"] >= 20
    assert len(prov["dataset_digest"]) == 64
    assert "retrained_from" not in prov and "synth" not in prov["dataset"]
    cal = bundle.meta["postprocess"]["calibration"]
    assert cal["n"] == prov["fit"]["holdout_images"]  # calibrated on the held-out images only
    assert np.isfinite([cal["t1"], cal["t2"]]).all() and cal["t1"] <= cal["t2"]
    assert bundle.meta["input"]["size"] == [64, 64]


def test_test_report_on_the_mvtec_layout(fitted: Path, parts: Path, tmp_path: Path) -> None:
    report_path, out = tmp_path / "report.json", tmp_path / "plots"
    args = ["--data", str(parts), "--json", str(report_path), "--out", str(out)]
    assert main(["detector", "test", str(fitted), *args]) == 0
    report = json.loads(report_path.read_text())
    assert REPORT_KEYS <= set(report)
    assert report["good_images"] == 24 and report["defect_images"] == 24
    assert report["image_auroc"] > 0.8  # the autoencoder sees dark dents, scratches and chips
    assert 0 < report["pixel_auroc"] <= 1 and 0 < report["aupro"] <= 1
    assert report["nominal_false_alarm_rate"] == pytest.approx(0.05)
    assert report["false_alarm_rate"] <= 0.15  # 24 good parts: at 5 % nominal, more than 3 would be a fault
    assert report["defects_flagged"] > 0.4
    assert set(report["per_defect"]) == {"scratch", "dent", "chip"}
    assert all(row["images"] == 8 for row in report["per_defect"].values())
    assert report["unlike_good_parts"]["good"] == 0  # no good part beyond the appearance check
    for name in ("score_histogram.png", "roc_pr.png", "gallery.png"):
        image = cv2.imread(str(out / name))
        assert image is not None and image.shape[0] > 100, name


def test_the_report_counts_frames_unlike_the_good_parts(
    fitted: Path, parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Frames with no washer at all (an empty fixture, the camera's flat grey) are NG by the
    appearance check; the commissioning report says how many of each kind it caught."""
    import shutil

    data = tmp_path / "washer"
    shutil.copytree(parts, data)
    (data / "test" / "missing").mkdir()
    background = cv2.imread(str(next((parts / "test" / "good").iterdir())), cv2.IMREAD_GRAYSCALE)
    for i, value in enumerate((int(np.median(background)), 128, 0)):
        cv2.imwrite(str(data / "test" / "missing" / f"{i}.png"), np.full_like(background, value))
    assert main(["detector", "test", str(fitted), "--data", str(data), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["per_defect"]["missing"]["ng"] == 1 and report["unlike_good_parts"]["good"] == 0
    assert report["unlike_good_parts"]["defective"] >= 3  # the missing ones, and large chips and dents may be
    out = capsys.readouterr().out
    assert (
        f"unlike the good parts as a whole (appearance check): 0 good, {report['unlike_good_parts']['defective']}"
        in out
    )


def test_gallery_shows_the_part_its_ground_truth_and_its_heat_map_side_by_side() -> None:
    from appliance.images import overlay
    from appliance.workflows.detector import gallery_tile

    view = np.full((32, 32), 90, np.uint8)
    view[10:14, 10:14] = 160  # the defect
    mask = np.zeros((32, 32), bool)
    mask[9:15, 9:15] = True
    hot = np.zeros((32, 32), np.float32)
    hot[9:15, 9:15] = 1.0
    tile = gallery_tile(view, hot, mask)
    assert tile.shape[0] == 32 and tile.shape[2] == 3 and tile.shape[1] > 64
    part, heat = tile[:, :32], tile[:, -32:]
    green = (part[..., 1] == 255) & (part[..., 0] == 0) & (part[..., 2] == 0)
    assert green[9, 9:15].all() and green[9:15, 9].all()  # the outline, on the ground truth's edge
    assert not green[11, 11] and (part[11, 11] == 160).all()  # the part itself is left as it was seen
    assert (heat == overlay(view, hot)).all()  # beside it, the part under its heat map
    plain = gallery_tile(view, hot, np.zeros((32, 32), bool))[:, :32]  # a good part: nothing outlined
    assert (plain == cv2.cvtColor(view, cv2.COLOR_GRAY2BGR)).all()


def test_test_report_without_masks_gives_image_metrics_only(fitted: Path, parts: Path, tmp_path: Path) -> None:
    root = tmp_path / "nomasks"
    for sub in ("test/good", "test/dent"):
        (root / sub).mkdir(parents=True)
        for f in sorted((parts / sub).iterdir())[:6]:
            (root / sub / f.name).write_bytes(f.read_bytes())
    assert main(["detector", "test", str(fitted), "--data", str(root), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["pixel_auroc"] is None and report["aupro"] is None
    assert report["image_auroc"] is not None


def test_predict_writes_a_csv_and_overlays(fitted: Path, parts: Path, tmp_path: Path) -> None:
    inputs = [str(parts / "test" / "dent"), str(parts / "test" / "good" / "000.png")]
    assert main(["detector", "predict", str(fitted), *inputs, "-o", str(tmp_path / "pred")]) == 0
    with (tmp_path / "pred" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    assert set(rows[0]) == {"path", "score", "norm_score", "decision", "defect_type"}
    assert {r["decision"] for r in rows} <= {"ok", "review", "ng"}
    assert rows[-1]["path"].endswith("good/000.png")
    assert len(list((tmp_path / "pred" / "overlays").glob("*.png"))) == 9


def test_fit_names_the_unreadable_files(parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "good"
    folder.mkdir()
    for f in sorted((parts / "train" / "good").rglob("*.*")):
        (folder / f"{f.parent.name}-{f.name}").write_bytes(f.read_bytes())
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (folder / "empty.jpg").write_bytes(b"")
    code = main(["detector", "fit", "--normal", str(folder), "--size", "32", "-o", str(tmp_path / "m.zip")])
    err = capsys.readouterr().err
    assert code == 2
    assert "broken.png" in err and "empty.jpg" in err and "cannot be read" in err
    assert not (tmp_path / "m.zip").exists()


def test_a_twelve_bit_cameras_files_train_and_serve_at_twelve_bits(
    parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """16-bit PNGs holding 12-bit values (a Mono12 camera's frames): fit reads them with 4,095 as
    full scale, says so, and the bundle keeps the depth, so that a 12-bit frame scores as its
    8-bit copy does (read as 16-bit, every frame would be 16 times too dark)."""
    folder = tmp_path / "mono12"
    folder.mkdir()
    for i, f in enumerate(sorted((parts / "train" / "good").rglob("*.*"))):
        grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        cv2.imwrite(str(folder / f"{i:03d}.png"), (grey.astype(np.int64) * 4095 // 255).astype(np.uint16))
    out = tmp_path / "mono12.zip"
    args = ["detector", "fit", "--normal", str(folder), "--size", "32", "--epochs", "2", "--method", "autoencoder"]
    assert main([*args, "-o", str(out)]) == 0
    assert "16-bit images using 12 bits: read with 4,095 as full scale" in capsys.readouterr().out
    assert bundle_io.load(out).meta["input"]["bit_depth"] == 12
    grey = cv2.imread(str(parts / "test" / "good" / "000.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "eight.png"), grey)
    cv2.imwrite(str(tmp_path / "twelve.png"), (grey.astype(np.int64) * 4095 // 255).astype(np.uint16))
    inputs = [str(tmp_path / "eight.png"), str(tmp_path / "twelve.png")]
    assert main(["detector", "predict", str(out), *inputs, "-o", str(tmp_path / "pred")]) == 0
    with (tmp_path / "pred" / "predictions.csv").open() as f:
        eight, twelve = (float(r["score"]) for r in csv.DictReader(f))
    assert twelve == pytest.approx(eight, rel=0.01)
    mixed = tmp_path / "mixed.zip"  # PNG, JPEG and 16-bit TIFF files using the whole 16-bit range
    assert main([*args[:3], str(parts / "train" / "good"), *args[4:], "-o", str(mixed)]) == 0
    assert bundle_io.load(mixed).meta["input"]["bit_depth"] == 16


def test_float_height_maps_train_and_serve_over_the_span_of_the_good_parts(
    parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Float TIFFs of measured values (a 3-D sensor's heights, 40 to 60 mm): fit takes the span
    of the good parts' values, says so and keeps it in the bundle, so that a height map scores as
    its 8-bit copy does (missing readings, NaN, as black); a part 3 mm higher all over (which
    stretching each image to its own range would hide) scores above T2."""

    def heights(grey: np.ndarray) -> np.ndarray:
        values = (40.0 + grey.astype(np.float32) * (20.0 / 255)).astype(np.float32)
        values[:3, :3] = np.nan  # a corner the sensor never sees: missing readings, read as black
        return values

    folder = tmp_path / "heights"
    folder.mkdir()
    for i, f in enumerate(sorted((parts / "train" / "good").rglob("*.*"))):
        assert cv2.imwrite(str(folder / f"{i:03d}.tiff"), heights(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)))
    out = tmp_path / "heights.zip"
    args = ["detector", "fit", "--normal", str(folder), "--size", "32", "--epochs", "2", "--method", "autoencoder"]
    assert main([*args, "-o", str(out)]) == 0
    low, high = bundle_io.load(out).meta["input"]["value_range"]
    assert 40.0 <= low < 45.0 and 55.0 < high <= 60.0
    assert f"images of measured values (float): read from {low:.6g} as black to {high:.6g} as white" in (
        capsys.readouterr().out
    )
    grey = cv2.imread(str(parts / "test" / "good" / "000.png"), cv2.IMREAD_GRAYSCALE)
    stretched = ((grey.astype(np.float32) * (20.0 / 255) + 40.0 - low) * 255 / (high - low)).round()
    stretched[:3, :3] = 0
    cv2.imwrite(str(tmp_path / "eight.png"), stretched.clip(0, 255).astype(np.uint8))
    cv2.imwrite(str(tmp_path / "map.tiff"), heights(grey))
    cv2.imwrite(str(tmp_path / "raised.tiff"), heights(grey) + 3.0)
    inputs = [str(tmp_path / n) for n in ("map.tiff", "raised.tiff")]
    assert main(["detector", "predict", str(out), *inputs, "-o", str(tmp_path / "pred")]) == 0
    with (tmp_path / "pred" / "predictions.csv").open() as f:
        height_map, raised = list(csv.DictReader(f))
    assert raised["decision"] == "ng" and height_map["decision"] == "ok"
    # an 8-bit picture of the same part is another kind of image: refused, naming the file and both kinds
    assert main(["detector", "predict", str(out), *inputs, str(tmp_path / "eight.png"), "-o", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "eight.png: the image holds counts (8- or 16-bit) (uint8); the model was fitted on images of measured" in err
    # a folder mixing both kinds is refused by fit, which names one of each
    (folder / "zz.png").write_bytes((tmp_path / "eight.png").read_bytes())
    assert main([*args, "-o", str(tmp_path / "mixed.zip")]) == 2
    err = capsys.readouterr().err
    assert "the good images mix counts (8- or 16-bit: 1, e.g. zz.png) and measured values (float or signed: 60" in err


def test_fit_refuses_too_few_images_and_a_bad_size(parts: Path, tmp_path: Path, capsys) -> None:
    folder = tmp_path / "few"
    folder.mkdir()
    for f in sorted((parts / "test" / "good").iterdir())[:5]:
        (folder / f.name).write_bytes(f.read_bytes())
    assert main(["detector", "fit", "--normal", str(folder), "-o", str(tmp_path / "m.zip")]) == 2
    assert "holds 5 images" in capsys.readouterr().err
    assert main(["detector", "fit", "--normal", str(folder), "--size", "30", "-o", str(tmp_path / "m.zip")]) == 2
    assert "size 30 must be divisible" in capsys.readouterr().err
    assert main(["detector", "fit", "--normal", str(tmp_path / "nope"), "-o", str(tmp_path / "m.zip")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_roi_and_colour_are_stored_and_applied(parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    out = tmp_path / "roi.zip"
    args = ["detector", "fit", "--normal", str(parts / "train" / "good"), "--size", "32", "--channels", "3"]
    assert main([*args, "--roi", "8,8,48,48", "--epochs", "2", "--method", "autoencoder", "-o", str(out)]) == 0
    with zipfile.ZipFile(out) as zf:
        spec = json.loads(zf.read("model.json"))["input"]
    assert spec["roi"] == [8, 8, 48, 48] and spec["channels"] == 3 and spec["frame_size"] == [64, 64]
    one = str(parts / "test" / "good" / "000.png")
    assert main(["detector", "predict", str(out), one, "-o", str(tmp_path / "p")]) == 0
    overlay = cv2.imread(str(tmp_path / "p" / "overlays" / "000.png"))
    assert overlay.shape[:2] == (48, 48)  # the heat map covers the region the model judged
    # a camera of a higher resolution: the region no longer frames the part, and the model says so
    cv2.imwrite(str(tmp_path / "bigger.png"), cv2.resize(cv2.imread(one), (96, 96)))
    assert main(["detector", "predict", str(out), str(tmp_path / "bigger.png"), "-o", str(tmp_path / "p2")]) == 2
    err = capsys.readouterr().err
    assert "the frame is 96×96; the region of interest [8, 8, 48, 48] was drawn on 64×64 frames" in err
    mixed = tmp_path / "mixed"
    shutil.copytree(parts / "train" / "good", mixed)
    cv2.imwrite(str(mixed / "wide.png"), np.zeros((64, 80, 3), np.uint8))
    assert main([*args[:3], str(mixed), *args[4:], "--roi", "8,8,48,48", "-o", str(tmp_path / "y.zip")]) == 2
    assert "a region of interest needs frames of one size; the good images come in 2: 64×64 (60), 80×64 (1)" in (
        capsys.readouterr().err
    )
    bad = ["detector", "fit", "--normal", str(parts / "train" / "good"), "--size", "32", "--roi", "60,60,50,50"]
    assert main([*bad, "-o", str(tmp_path / "x.zip")]) == 2
    assert main([*bad[:-2], "--roi", "1,2,3", "-o", str(tmp_path / "x.zip")]) == 2


def test_full_resolution_fit_maps_defects_at_the_input_resolution(parts: Path, tmp_path: Path) -> None:
    out = tmp_path / "fine.zip"
    args = ["detector", "fit", "--normal", str(parts / "train" / "good"), "--size", "32", "--epochs", "2"]
    assert main([*args, "--full-resolution", "-o", str(out)]) == 0
    bundle = bundle_io.load(out)
    assert bundle.meta["provenance"]["config"]["clf_stem_stride"] == 1
    layers = bundle.meta["networks"]["classifier"]["layers"]
    assert layers[-1]["type"] == "Convolution"  # logits straight from full resolution: no strided stem, no upsampling
    assert all(layer.get("stride") in (None, [1, 1]) for layer in layers)
    one = str(parts / "test" / "good" / "000.png")
    assert main(["detector", "predict", str(out), one, "-o", str(tmp_path / "p")]) == 0


def test_full_resolution_is_refused_for_a_method_without_a_defect_map(
    parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "plain.zip"
    args = ["detector", "fit", "--normal", str(parts / "train" / "good"), "--size", "32", "--epochs", "2"]
    assert main([*args, "--method", "autoencoder", "--full-resolution", "-o", str(out)]) == 2
    assert "--full-resolution is the draem defect map's; --method autoencoder has none" in capsys.readouterr().err
    assert not out.exists()


def test_test_reads_mvtec_ad_2s_public_test_set(fitted: Path, parts: Path, tmp_path: Path) -> None:
    """MVTec AD 2 keeps its labelled test set in test_public/ (good, bad) with the masks inside it,
    in test_public/ground_truth/bad/: the same parts in that layout give the same report."""
    ad2 = tmp_path / "ad2"
    shutil.copytree(parts / "train", ad2 / "train")
    shutil.copytree(parts / "test" / "good", ad2 / "test_public" / "good")
    for kind in ("scratch", "dent", "chip"):  # AD 2 names its defects "bad" only
        for image in sorted((parts / "test" / kind).iterdir()):
            name = f"{kind}_{image.name}"
            (ad2 / "test_public" / "bad").mkdir(parents=True, exist_ok=True)
            shutil.copy(image, ad2 / "test_public" / "bad" / name)
            mask = parts / "ground_truth" / kind / f"{image.stem}_mask.png"
            (ad2 / "test_public" / "ground_truth" / "bad").mkdir(parents=True, exist_ok=True)
            shutil.copy(mask, ad2 / "test_public" / "ground_truth" / "bad" / f"{Path(name).stem}_mask.png")
    layout = mvtec_layout(ad2)
    assert layout.defects == ["bad"] and all(i.mask is not None for i in layout.test if i.defect == "bad")
    reports = []
    for data in (parts, ad2):
        assert main(["detector", "test", str(fitted), "--data", str(data), "--json", str(tmp_path / "r.json")]) == 0
        reports.append(json.loads((tmp_path / "r.json").read_text()))
    mvtec, ours = reports
    assert ours["good_images"] == 24 and ours["defect_images"] == 24 and set(ours["per_defect"]) == {"bad"}
    for key in ("image_auroc", "pixel_auroc", "aupro", "false_alarm_rate"):
        assert ours[key] == pytest.approx(mvtec[key]), key


def test_fit_reads_what_vision_software_saves_and_names_the_files_it_leaves_out(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """WebP, netpbm (8- and 16-bit PGM, PPM), JPEG 2000 and BMP frames are good images; a GIF and
    a notes file are not read, and fit says how many files it left out rather than dropping them unseen."""
    from sklearn.datasets import load_sample_images

    photo = cv2.cvtColor(load_sample_images().images[1], cv2.COLOR_RGB2GRAY)
    folder = tmp_path / "good"
    folder.mkdir()
    suffixes = (".webp", ".pgm", ".ppm", ".jp2", ".bmp", ".pgm16")
    for i in range(42):
        patch = photo[100 + 5 * i : 132 + 5 * i, 200:232]
        suffix = suffixes[i % len(suffixes)]
        if suffix == ".pgm16":
            assert cv2.imwrite(str(folder / f"{i:03d}.pgm"), patch.astype(np.uint16) * 257)
        else:
            image = cv2.cvtColor(patch, cv2.COLOR_GRAY2BGR) if suffix == ".ppm" else patch
            assert cv2.imwrite(str(folder / f"{i:03d}{suffix}"), image)
    (folder / "notes.txt").write_text("lamp changed on Monday")
    (folder / "logo.gif").write_bytes(b"GIF89a")
    out = tmp_path / "formats.zip"
    args = ["detector", "fit", "--normal", str(folder), "--size", "32", "--epochs", "1", "-o", str(out)]
    assert main(args) == 0
    log = capsys.readouterr().out
    assert "2 files are not images read here and are left out of" in log and "(1 .gif, 1 .txt)" in log
    assert bundle_io.load(out).meta["provenance"]["normal_images"] == 42


def _readings(path: Path, n: int, offset: int = 0, faults: bool = False) -> Path:
    """Three channels of periodic signals with noise; with ``faults``, spikes labelled 'spike'."""
    rng = np.random.default_rng(offset)
    t = np.arange(n) + offset
    x = np.stack([np.sin(t / 10), np.cos(t / 17), 0.5 * np.sin(t / 5)], 1) + 0.05 * rng.normal(size=(n, 3))
    labels = ["ok"] * n
    if faults:
        for s in range(100, n - 20, 200):
            x[s : s + 20, 0] += 2.0
            labels[s : s + 20] = ["spike"] * 20
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["x", "y", "z", *(["label"] if faults else [])])
        writer.writerows([[*map(float, row), *([lab] if faults else [])] for row, lab in zip(x, labels, strict=True)])
    return path


def test_the_detector_verbs_work_on_sensor_readings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from connectors.factory import open_source
    from models.inference import Inferencer

    normal, labelled, model = (
        _readings(tmp_path / "normal.csv", 3000),
        _readings(tmp_path / "t.csv", 1600, 9, True),
        tmp_path / "s.zip",
    )
    args = ["detector", "fit", "--normal", str(normal), "--window", "32", "--hop", "16", "--epochs", "30"]
    assert main([*args, "-o", str(model)]) == 0
    assert main(["detector", "test", str(model), "--data", str(labelled), "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert REPORT_KEYS <= set(report) and report["pixel_auroc"] is None
    assert report["image_auroc"] > 0.9 and set(report["per_defect"]) == {"spike"}
    assert report["false_alarm_rate"] <= 0.1
    assert main(["detector", "predict", str(model), str(labelled), "-o", str(tmp_path / "p")]) == 0
    with (tmp_path / "p" / "predictions.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == (1600 - 32) // 16 + 1 and rows[0]["first_line"] == "2"
    # the line assembles the same windows: the csv: source's sample scores in the bundle's serving path
    source = open_source(f"csv:{normal}?window=32&hop=16", "s")
    try:
        sample = source.read(2.0)
    finally:
        source.close()
    result = Inferencer(model).predict(sample.payload)
    assert sample.payload.shape == (3, 32) and result.decision in ("ok", "review", "ng")
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y,z\n1,2,3\n4,secret,6\n")
    assert main(["detector", "fit", "--normal", str(bad), "-o", str(tmp_path / "b.zip")]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "secret" not in err


def test_a_data_loggers_export_fits_and_predicts_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A logger's CSV as a German spreadsheet saves it (semicolons, decimal commas, a timestamp
    column, a byte-order mark): fit reads it without editing and says how; predictions name each
    window's first and last reading by line and time."""
    plain = _readings(tmp_path / "plain.csv", 600)
    with plain.open() as f:
        rows = list(csv.reader(f))
    logger = tmp_path / "logger.csv"
    lines = ["Zeitstempel;" + ";".join(f"{name} [mm/s]" for name in rows[0])]
    for i, row in enumerate(rows[1:]):
        stamp = f"01.12.2026 08:{i // 60:02d}:{i % 60:02d}"
        lines.append(stamp + ";" + ";".join(f"{float(v):.4f}".replace(".", ",") for v in row))
    logger.write_text("\ufeff" + "\n".join(lines) + "\n", encoding="utf-8")
    model = tmp_path / "logger.zip"
    assert main(["detector", "fit", "--normal", str(logger), "--window", "32", "--hop", "16", "-o", str(model)]) == 0
    out = capsys.readouterr().out
    assert "semicolon-separated, decimal comma, time column 'Zeitstempel'" in out
    assert "600 readings of 3 channels" in out
    assert bundle_io.load(model).meta["provenance"]["channels"] == ["x [mm/s]", "y [mm/s]", "z [mm/s]"]
    # the same readings written plainly score the same: nothing was lost in the reading
    assert main(["detector", "predict", str(model), str(logger), "-o", str(tmp_path / "p1")]) == 0
    assert main(["detector", "predict", str(model), str(plain), "-o", str(tmp_path / "p2")]) == 0
    with (tmp_path / "p1" / "predictions.csv").open() as f1, (tmp_path / "p2" / "predictions.csv").open() as f2:
        logged, written = list(csv.DictReader(f1)), list(csv.DictReader(f2))
    assert len(logged) == (600 - 32) // 16 + 1 == len(written)
    assert logged[1]["first_line"] == "18" and logged[1]["last_line"] == "49"
    assert logged[1]["first_time"] == "01.12.2026 08:00:16" and logged[1]["last_time"] == "01.12.2026 08:00:47"
    assert written[1]["first_time"] == ""
    np.testing.assert_allclose(
        [float(r["score"]) for r in logged], [float(r["score"]) for r in written], rtol=1e-3, atol=1e-4
    )


def test_fit_keeps_near_twins_of_its_calibration_images_out_of_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Overlapping views of a surface (one photograph scanned in 64 px tiles, 8 px apart): the
    held-out views share no content with a trained one; their twins are set aside, and said so."""
    from sklearn.datasets import load_sample_images

    temple = load_sample_images().images[0][..., ::-1]
    folder = tmp_path / "tiles"
    folder.mkdir()
    for i, (y, x) in enumerate((y, x) for y in range(40, 360, 40) for x in range(0, 64, 8)):
        cv2.imwrite(str(folder / f"{i:03d}.png"), temple[y : y + 64, 200 + x : 264 + x])
    out = tmp_path / "tiles.zip"
    assert main(["detector", "fit", "--normal", str(folder), "--size", "64", "--epochs", "1", "-o", str(out)]) == 0
    fit = bundle_io.load(out).meta["provenance"]["fit"]
    assert fit["holdout_images"] >= 20 and 0 < fit["twins_left_out"] <= fit["holdout_images"]
    assert fit["train_images"] + fit["holdout_images"] + fit["twins_left_out"] == 64
    out = capsys.readouterr().out
    assert f"none shares content with a training image ({fit['twins_left_out']} of their near-twins set aside)" in out
    assert "training shows the good images" in out  # and in which orientations


def test_a_defective_image_without_a_mask_is_left_out_of_the_pixel_metrics_and_said_so(
    fitted: Path, parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    data = tmp_path / "washer"
    shutil.copytree(parts, data)
    next((data / "ground_truth").rglob("*_mask.png")).unlink()
    report_path = tmp_path / "report.json"
    assert main(["detector", "test", str(fitted), "--data", str(data), "--json", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    assert report["defect_images"] == 24 and report["defect_images_without_mask"] == 1
    assert 0 < report["pixel_auroc"] <= 1
    assert "1 defective image has no mask under ground_truth/: left out of both" in capsys.readouterr().out


def test_a_teach_job_learns_a_3d_sensors_frames_with_missing_readings(parts: Path, tmp_path: Path) -> None:
    """Teach frames of measured values (heights with a corner the sensor never sees, NaN) go
    through the teach job whole: near-twin search, fit over the good parts' span, the test report."""
    from appliance.jobs import JobContext
    from appliance.storage import store
    from appliance.storage.db import init_db, make_engine
    from appliance.workflows.teach import teach

    folder = tmp_path / "laser"
    folder.mkdir()
    for i, f in enumerate(sorted((parts / "train" / "good").rglob("*.*"))):
        grey = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        heights = (40.0 + grey.astype(np.float32) * (20.0 / 255)).astype(np.float32)
        heights[:3, :3] = np.nan
        assert cv2.imwrite(str(folder / f"{i:03d}.tiff"), heights)
    engine = make_engine(f"sqlite:///{tmp_path / 'appliance.db'}")
    init_db(engine)
    job = store.create_job(engine, kind="teach", params={}, actor="test")
    params = {"source_id": "laser:1", "source": "folder", "folder": str(folder), "size": 32, "epochs": 2}
    params |= {"method": "autoencoder", "appearance_check": False}  # the console's toggle, off
    result = teach(JobContext(engine, job), engine, tmp_path / "data", params)
    assert result["report"]["good_images"] == 12 and result["report"]["false_alarm_rate"] is not None
    bundle = bundle_io.load(tmp_path / "data" / "models" / f"teach-{job}.zip")
    assert 40.0 <= bundle.meta["input"]["value_range"][0] < bundle.meta["input"]["value_range"][1] <= 60.0
    assert bundle.meta["input"]["pixels"] == "values" and "appearance" not in bundle.meta["postprocess"]
    assert bundle.meta["provenance"]["config"]["light_jitter"] == 0  # heights do not change with the light
    del bundle.meta["provenance"]["config"]["light_jitter"]  # a bundle from before the field, retrained:
    assert Detector.from_bundle(bundle).config.light_jitter == 0


def test_the_appearance_check_can_be_left_off(parts: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Parts whose whole look varies beyond what the good images show (a commissioning report with
    good parts 'unlike the good parts'): ``--no-appearance-check`` lets the defect map alone decide."""
    out = tmp_path / "plain.zip"
    args = ["detector", "fit", "--normal", str(parts / "train" / "good"), "--size", "32", "--epochs", "1"]
    args += ["--method", "autoencoder", "--no-appearance-check", "--light-tolerance", "0"]
    assert main([*args, "-o", str(out)]) == 0
    assert "appearance check: off (the defect map alone decides)" in capsys.readouterr().out
    bundle = bundle_io.load(out)
    assert "appearance" not in bundle.meta["postprocess"]
    config = bundle.meta["provenance"]["config"]
    assert config["appearance_check"] is False and config["light_jitter"] == 0
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64), 128, np.uint8))
    assert main(["detector", "predict", str(out), str(blank), "-o", str(tmp_path / "pred")]) == 0
    with (tmp_path / "pred" / "predictions.csv").open() as f:
        assert next(csv.DictReader(f))["defect_type"] != "unlike the good parts"


def test_a_loggers_dropouts_are_left_out_and_no_window_spans_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Rows a logger could not fill (an empty cell, a spreadsheet's #N/A) are left out and named;
    windows are cut from the runs between them, never across one."""
    path = _readings(tmp_path / "gappy.csv", 600)
    lines = path.read_text().splitlines()
    lines[101] = "0.1,,0.2"  # line 102: row 101 empty in y
    lines[301] = "#N/A,0.3,0.1"  # line 302
    path.write_text("\n".join(lines) + "\n")
    model = tmp_path / "gappy.zip"
    assert main(["detector", "fit", "--normal", str(path), "--window", "32", "--hop", "16", "-o", str(model)]) == 0
    out = capsys.readouterr().out
    assert "2 rows cannot be read and are left out (no window spans them): line 102, column 'y' is empty" in out
    assert "#N/A" not in out
    # runs of 100, 199 and 299 readings: 5 + 11 + 17 windows of 32 every 16
    assert "598 readings of 3 channels → 33 windows of 32 (every 16)" in out
    assert main(["detector", "predict", str(model), str(path), "-o", str(tmp_path / "p")]) == 0
    with (tmp_path / "p" / "predictions.csv").open() as f:
        spans = [(int(r["first_line"]), int(r["last_line"])) for r in csv.DictReader(f)]
    assert len(spans) == 33 and all(not (a <= gap <= b) for a, b in spans for gap in (102, 302))
    assert all(b - a == 31 for a, b in spans)  # every window: 32 consecutive lines of the file
    # a file most of whose rows cannot be read is a layout not understood: refused by its first row
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,x\n2,y\n3,4\n")
    assert main(["detector", "fit", "--normal", str(bad), "-o", str(tmp_path / "b.zip")]) == 2
    assert "line 2, column 'b' is not a number" in capsys.readouterr().err


def test_tabular_rows_fit_one_sample_a_row_and_are_reported_as_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A table of measurements, one part a row, as pandas writes it (its row numbers in a column
    with no name): the default window says how to fit it, ``--window 1`` does, and the report
    counts rows. The row numbers are not a channel."""
    import pandas as pd
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True).frame
    normal = wine[wine.target == 0].drop(columns="target")
    normal.iloc[:45].to_csv(tmp_path / "normal.csv")  # pandas' index as a first, unnamed column
    test = pd.concat(
        [normal.iloc[45:].assign(label="ok"), wine[wine.target != 0].drop(columns="target").assign(label="other")]
    )
    test.to_csv(tmp_path / "test.csv")
    model = tmp_path / "wine.zip"
    args = ["detector", "fit", "--normal", str(tmp_path / "normal.csv"), "-o", str(model)]
    assert main(args) == 2
    assert "--window 1 where each row is a sample of its own" in capsys.readouterr().err
    assert main([*args, "--window", "1"]) == 0
    out = capsys.readouterr().out
    assert "comma-separated, index column ''" in out and "45 readings of 13 channels" in out
    assert (
        main(["detector", "test", str(model), "--data", str(tmp_path / "test.csv"), "--json", str(tmp_path / "r.json")])
        == 0
    )
    out = capsys.readouterr().out
    assert f"14 good, {len(test) - 14} defective rows" in out and "  other " in out
    assert json.loads((tmp_path / "r.json").read_text())["image_auroc"] > 0.95
