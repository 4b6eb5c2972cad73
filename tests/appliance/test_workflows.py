"""NNC's tutorials and workflows from the CLI, as a user types them."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    base = tmp_path_factory.mktemp("samples")
    for name in ("digits_4or9", "digits_4or9_anomaly", "iris", "digits"):
        assert cli("dataset", "sample", name, base / name) == 0
    return base


def write_project(
    path: Path, network: str, data: str, epochs: int, extra: str = "", batch: int = 64, lr: float = 0.003
) -> Path:
    path.write_text(
        f"network: {network}\n{extra}"
        f"dataset: {{training: {data}/training.csv, validation: {data}/validation.csv}}\n"
        f"config: {{max_epoch: {epochs}, batch_size: {batch}, solver: {{type: Adam, lr: {lr}}}}}\n"
    )
    return path


def train_and_evaluate(
    tmp_path: Path, samples: Path, name: str, network: str, data: str, epochs: int, extra: str = "", **kw
) -> dict:
    project = write_project(samples / f"{name}.yaml", network, data, epochs, extra, **kw)
    run = tmp_path / name
    assert cli("train", project, "-o", run, "--quiet") == 0
    assert cli("evaluate", run, "--dataset", samples / data / "validation.csv") == 0
    return json.loads((run / "evaluation" / "evaluation.json").read_text())


def test_logistic_regression_on_4_vs_9(tmp_path, samples):
    report = train_and_evaluate(tmp_path, samples, "lr", "{zoo: logistic_regression}", "digits_4or9", 30, lr=0.01)
    assert report["accuracy"] >= 0.95
    assert report["threshold"] == 0.5 and len(report["confusion_matrix"]) == 2
    assert set(report["per_class"]["1"]) == {"precision", "recall", "f_measure", "support"}
    run = tmp_path / "lr"
    for name in (
        "learning_curve.csv",
        "learning_curve.png",
        "monitoring_report.yml",
        "config.yaml",
        "train.log",
        "checkpoints/last.npz",
        "checkpoints/best.npz",
        "results/best.zip",
        "results/last.zip",
        "evaluation/output_result.csv",
        "evaluation/confusion_matrix.png",
    ):
        assert (run / name).is_file(), name
    with (run / "learning_curve.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and {"cost", "train_error", "valid_error", "valid_accuracy"} <= set(rows[0])
    with (run / "evaluation" / "output_result.csv").open() as f:
        out = list(csv.reader(f))
    assert out[0] == ["x:image", "y:label", "y'"] and len(out) == 92


def test_mlp_on_4_vs_9(tmp_path, samples):
    report = train_and_evaluate(tmp_path, samples, "mlp", "{zoo: mlp, options: {hidden: [64]}}", "digits_4or9", 20)
    assert report["accuracy"] >= 0.95


def test_binary_cnn_on_4_vs_9(tmp_path, samples):
    report = train_and_evaluate(tmp_path, samples, "cnn", "{zoo: binary_cnn}", "digits_4or9", 15, batch=32, lr=0.005)
    assert report["accuracy"] >= 0.95


def test_iris_vectors(tmp_path, samples):
    report = train_and_evaluate(
        tmp_path, samples, "iris", "{zoo: mlp, options: {hidden: [16]}}", "iris", 200, batch=16, lr=0.01
    )
    assert report["accuracy"] >= 0.93 and len(report["confusion_matrix"]) == 3


def test_autoencoder_trained_on_4_and_9_flags_other_digits(tmp_path, samples):
    report = train_and_evaluate(
        tmp_path,
        samples,
        "ae",
        "{zoo: dense_autoencoder, options: {hidden: 64, code: 16}}",
        "digits_4or9_anomaly",
        40,
        "task: autoencoder\n",
        batch=32,
    )
    assert report["auroc"] >= 0.95
    with (tmp_path / "ae" / "evaluation" / "output_result.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][-2:] == ["score'", "heatmap'"]
    assert (tmp_path / "ae" / "evaluation" / rows[1][-1]).is_file()


def test_forward_follows_nnabla_cli_conventions(tmp_path, samples):
    project = write_project(samples / "ten.yaml", "{zoo: logistic_regression}", "digits", 2)
    assert cli("train", project, "-o", tmp_path / "ten", "--quiet") == 0
    assert (
        cli(
            "forward",
            "-c",
            tmp_path / "ten" / "results" / "last.zip",
            "-d",
            samples / "digits" / "validation.csv",
            "-o",
            tmp_path / "fwd",
        )
        == 0
    )
    with (tmp_path / "fwd" / "output_result.csv").open() as f:
        header = next(csv.reader(f))
    assert header == ["x:image", "y:label"] + [f"y'__{k}" for k in range(10)]
    ae = write_project(
        samples / "ae_fwd.yaml",
        "{zoo: conv_autoencoder, options: {widths: [4]}}",
        "digits_4or9",
        1,
        "task: autoencoder\n",
    )
    assert cli("train", ae, "-o", tmp_path / "aefwd", "--quiet") == 0
    assert (
        cli(
            "forward",
            "-c",
            tmp_path / "aefwd",
            "-d",
            samples / "digits_4or9" / "validation.csv",
            "-o",
            tmp_path / "fwd2",
        )
        == 0
    )
    with (tmp_path / "fwd2" / "output_result.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0][-1] == "y'" and cv2.imread(str(tmp_path / "fwd2" / rows[1][-1])).shape[:2] == (28, 28)


def test_hand_written_csv_in_nnc_format_trains_unchanged(tmp_path):
    """Indexed vector columns with labels, '#' comment columns, relative paths, 16-bit PNGs."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    keep = np.isin(digits.target, (0, 1))
    folder = tmp_path / "hand"
    (folder / "img16").mkdir(parents=True)
    rows = []
    for i in np.flatnonzero(keep)[:120]:
        image16 = (digits.images[i] / 16 * 65535).astype(np.uint16)
        cv2.imwrite(str(folder / "img16" / f"{i}.png"), image16)
        rows.append([f"batch-{i % 3}", f"img16/{i}.png", *[f"{v:.1f}" for v in digits.data[i][:4]], digits.target[i]])
    text = "#note,x:image,v__0:px 0,v__1:px 1,v__2:px 2,v__3:px 3,y:label\n" + "\n".join(
        ",".join(map(str, r)) for r in rows
    )
    (folder / "train.csv").write_text(text + "\n")
    assert cli("dataset", "check", folder / "train.csv") == 0
    from appliance.datasets import NNCDataset

    ds = NNCDataset(folder / "train.csv")
    x = ds.load("x")
    assert x.shape == (120, 1, 8, 8) and 0.9 < x.max() <= 1.0  # 16-bit scaled by 1/65535
    assert ds.load("v").shape == (120, 4) and ds.variables["v"].labels == ["px 0", "px 1", "px 2", "px 3"]
    project = folder / "p.yaml"
    project.write_text(
        "network: {zoo: logistic_regression}\ndataset: {training: train.csv, validation: train.csv}\n"
        "config: {max_epoch: 20, batch_size: 16, solver: {type: Adam, lr: 0.02}}\n"
    )
    assert cli("train", project, "-o", tmp_path / "handrun", "--quiet") == 0
    with (tmp_path / "handrun" / "learning_curve.csv").open() as f:
        assert float(list(csv.DictReader(f))[-1]["valid_accuracy"]) > 0.95


def test_malformed_csvs_get_row_and_column(tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), np.zeros((8, 8), np.uint8))
    cv2.imwrite(str(folder / "big.png"), np.zeros((9, 9), np.uint8))
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "é.png").write_bytes(b"")
    (folder / "bad.csv").write_text(
        "x:image,v__0,v__1,y:label\n"
        "a.png,1,2,0\n"
        "missing.png,1,2,0\n"
        "big.png,1,2,1\n"
        "a.png,1,abc,1\n"
        "broken.png,1,2,1\n"
        "é.png,1,2,0\n"
        "a.png,1,2\n"
        "a.png,1,2,zero\n"
    )
    assert cli("dataset", "check", folder / "bad.csv") == 1
    err = capsys.readouterr().err
    assert "row 8: has 3 cells, the header has 4" in err
    # fix the short row, then every cell problem is reported with its row and column
    text = (folder / "bad.csv").read_text().replace("a.png,1,2\n", "a.png,1,2,1\n")
    (folder / "bad.csv").write_text(text)
    assert cli("dataset", "check", folder / "bad.csv") == 1
    err = capsys.readouterr().err
    for expected in (
        "row 3, column 'x:image': file missing.png does not exist",
        "row 4, column 'x:image': shape (1, 9, 9) differs from (1, 8, 8) (row 2)",
        "row 5, column 'v__1': 'abc' is not a number",
        "row 6, column 'x:image': image cannot be decoded",
        "row 7, column 'x:image': path 'é.png' is not ASCII",
        "row 9, column 'y:label': 'zero' is neither a number nor a path",
    ):
        assert expected in err, expected
    # blank lines (a spreadsheet's empty rows) are skipped, and rows keep their lines in the file
    (folder / "bad.csv").write_text(text.replace("missing.png,1,2,0\n", "\n\nmissing.png,1,2,0\n"))
    assert cli("dataset", "check", folder / "bad.csv") == 1
    err = capsys.readouterr().err
    assert "row 5, column 'x:image': file missing.png does not exist" in err
    assert "row 11, column 'y:label': 'zero' is neither a number nor a path" in err


def test_project_errors_name_the_key(tmp_path, samples, capsys):
    project = tmp_path / "bad.yaml"
    project.write_text("network: {zoo: lenet}\ndataset: {training: x.csv}\nconfig: {max_epochs: 3, batch_size: -1}\n")
    assert cli("train", project, "-o", tmp_path / "r", "--quiet") == 2
    err = capsys.readouterr().err
    assert "unknown key 'config.max_epochs'" in err and "'config.batch_size' has value -1" in err
    project.write_text("network: {zoo: lenet, spec: net.yaml}\ndataset: {training: x.csv}\n")
    assert cli("train", project, "--quiet") == 2
    assert "exactly one of 'zoo'" in capsys.readouterr().err
    assert cli("train", tmp_path / "nothere.yaml") == 2
    assert (
        cli(
            "train",
            write_project(tmp_path / "p.yaml", "{zoo: lenet}", str(samples / "digits"), 1),
            "-o",
            tmp_path / "nope",
            "--resume",
        )
        == 2
    )
    assert "nothing to resume" in capsys.readouterr().err


def test_resume_after_a_kill_finishes_the_same_number_of_epochs(tmp_path, samples):
    epochs = 12
    project = write_project(samples / "resume.yaml", "{zoo: lenet}", "digits", epochs, batch=32)
    run = tmp_path / "resume"
    command = [sys.executable, "-m", "appliance.cli", "train", str(project), "-o", str(run), "--no-progress"]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    curve = run / "learning_curve.csv"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if curve.is_file() and len(curve.read_text().splitlines()) - 1 >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "training finished before it could be interrupted"
    os.kill(proc.pid, signal.SIGKILL)  # killed during a later epoch
    proc.wait()
    done_before = len(curve.read_text().splitlines()) - 1
    assert 3 <= done_before < epochs
    assert cli("train", project, "-o", run, "--resume", "--quiet") == 0
    with curve.open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert float(rows[-1]["valid_accuracy"]) > 0.9
    assert "resumed from" in (run / "train.log").read_text()


def test_dataset_create_from_folders_converts_rgba_and_16_bit(tmp_path):
    src = tmp_path / "src"
    for cls, n in (("ok", 6), ("scratch", 4)):
        (src / cls).mkdir(parents=True)
        for i in range(n):
            rgba = np.zeros((20, 30, 4), np.uint8)
            rgba[..., :3], rgba[..., 3] = 100 + 10 * i, 255
            cv2.imwrite(str(src / cls / f"{i}.png"), rgba if i % 2 else (rgba[..., 0].astype(np.uint16) * 257))
    assert (
        cli(
            "dataset",
            "create",
            src,
            tmp_path / "out",
            "--width",
            "16",
            "--height",
            "16",
            "--mode",
            "padding",
            "--train-percent",
            "70",
        )
        == 0
    )
    from appliance.datasets import NNCDataset

    train, valid = NNCDataset(tmp_path / "out" / "training.csv"), NNCDataset(tmp_path / "out" / "validation.csv")
    assert len(train) + len(valid) == 10 and len(train) == 7  # nothing dropped, RGBA included
    assert train.load("x").shape[1:] == (1, 16, 16) and set(np.r_[train.load("y"), valid.load("y")]) == {0, 1}
    normal = tmp_path / "normal"
    normal.mkdir()
    for i in range(5):
        cv2.imwrite(str(normal / f"{i}.jpg"), np.full((10, 10, 3), 50 * i, np.uint8))
    assert (
        cli(
            "dataset",
            "create",
            normal,
            tmp_path / "n",
            "--channels",
            "3",
            "--width",
            "8",
            "--height",
            "8",
            "--train-percent",
            "100",
        )
        == 0
    )
    one = NNCDataset(tmp_path / "n" / "training.csv")
    assert list(one.variables) == ["x"] and one.load("x").shape == (5, 3, 8, 8)


def test_mvtec_layout_import(tmp_path):
    cat = tmp_path / "bottle"
    for folder in ("train/good", "test/good", "test/broken", "ground_truth/broken"):
        (cat / folder).mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(cat / "train" / "good" / f"{i:03d}.png"), np.full((32, 32, 3), 120, np.uint8))
        cv2.imwrite(str(cat / "test" / "good" / f"{i:03d}.png"), np.full((32, 32, 3), 120, np.uint8))
        cv2.imwrite(str(cat / "test" / "broken" / f"{i:03d}.png"), np.full((32, 32, 3), 30, np.uint8))
        mask = np.zeros((32, 32), np.uint8)
        mask[8:16, 8:16] = 255
        cv2.imwrite(str(cat / "ground_truth" / "broken" / f"{i:03d}_mask.png"), mask)
    assert cli("dataset", "create", cat, tmp_path / "mv", "--mvtec", "--width", "16", "--height", "16") == 0
    from appliance.datasets import NNCDataset

    test = NNCDataset(tmp_path / "mv" / "test.csv")
    assert len(NNCDataset(tmp_path / "mv" / "train.csv")) == 3 and len(test) == 6
    assert list(test.load("y")) == [1, 1, 1, 0, 0, 0]
    masks = test.load("mask")
    assert masks[:3].max() == 1.0 and masks[3:].max() == 0.0 and masks[0, 0, 4:8, 4:8].min() == 1.0


def test_masks_named_as_other_tools_name_them_are_found(tmp_path, capsys):
    """MVTec AD's ``<name>_mask.png``; ``<name>.png`` holding 0 / 1 beside JPEG images (anomalib's
    folder datasets, VisA put in this layout); a subfolder mirrored under ground_truth/, as BMP."""
    from appliance.datasets.images import mvtec_layout

    cat = tmp_path / "part"
    region = np.zeros((32, 32), np.uint8)
    region[8:16, 8:16] = 1
    files = {
        "train/good/000.png": np.full((32, 32), 120, np.uint8),
        "test/good/000.png": np.full((32, 32), 120, np.uint8),
        "test/crack/000.png": np.full((32, 32), 30, np.uint8),
        "ground_truth/crack/000_mask.png": region * 255,
        "test/bad/000.JPG": np.full((32, 32), 30, np.uint8),
        "ground_truth/bad/000.png": region,
        "test/dent/left/000.png": np.full((32, 32), 30, np.uint8),
        "ground_truth/dent/left/000_mask.bmp": region * 255,
    }
    for rel, image in files.items():
        (cat / rel).parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(cat / rel), image)
    masks = {i.path.relative_to(cat).as_posix(): i.mask for i in mvtec_layout(cat).test}
    assert masks == {
        "test/bad/000.JPG": cat / "ground_truth/bad/000.png",
        "test/crack/000.png": cat / "ground_truth/crack/000_mask.png",
        "test/dent/left/000.png": cat / "ground_truth/dent/left/000_mask.bmp",
        "test/good/000.png": None,
    }
    assert cli("dataset", "create", cat, tmp_path / "mv", "--mvtec", "--width", "16", "--height", "16") == 0
    from appliance.datasets import NNCDataset

    test = NNCDataset(tmp_path / "mv" / "test.csv")
    assert list(test.load("y")) == [1, 1, 1, 0]
    made = test.load("mask")
    assert all(m[0, 4:8, 4:8].min() == 1.0 and m.sum() == 16 for m in made[:3]) and made[3].max() == 0.0
    cv2.imwrite(str(cat / "test" / "good" / "001.tiff"), np.full((32, 32), 0.5, np.float32))
    assert cli("dataset", "create", cat, tmp_path / "mv2", "--mvtec", "--width", "16", "--height", "16") == 2
    assert "001.tiff: holds measured values (float32), not 8- or 16-bit counts" in capsys.readouterr().err


def test_second_load_reads_no_image_files_and_edits_invalidate_the_cache(tmp_path, samples, monkeypatch):
    import appliance.datasets.nnc as nnc

    calls = []
    real = nnc.read_file_cell
    monkeypatch.setattr(nnc, "read_file_cell", lambda *a: calls.append(a) or real(*a))
    csv_path = samples / "digits_4or9" / "validation.csv"
    first = nnc.NNCDataset(csv_path).load("x")
    decoded = len(calls)
    again = nnc.NNCDataset(csv_path).load("x")
    assert len(calls) == decoded and np.array_equal(first, again)  # served from .cache/
    row = list(csv.reader(csv_path.open()))[1]
    path = samples / "digits_4or9" / row[0]
    cv2.imwrite(str(path), np.full((28, 28), 255, np.uint8))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = nnc.NNCDataset(csv_path).load("x")
    assert len(calls) > decoded and changed[0].min() == 1.0


def test_absolute_paths_need_permission(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4), np.uint8))
    (tmp_path / "abs.csv").write_text(f"x:image\n{tmp_path / 'a.png'}\n")
    assert cli("dataset", "check", tmp_path / "abs.csv") == 1
    assert cli("dataset", "check", tmp_path / "abs.csv", "--allow-absolute") == 0


def test_regression_reports_mae_rmse_r2(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3))
    y = x @ np.array([1.5, -2.0, 0.5]) + 0.1 * rng.normal(size=300)
    rows = "\n".join(",".join(f"{v:.5f}" for v in (*xi, yi)) for xi, yi in zip(x, y, strict=True))
    for name, part in (("training", rows.splitlines()[:240]), ("validation", rows.splitlines()[240:])):
        (tmp_path / f"{name}.csv").write_text("x__0,x__1,x__2,y\n" + "\n".join(part) + "\n")
    (tmp_path / "reg.yaml").write_text(
        "network: {spec: {input: [3], layers: [{type: Affine, n_outmaps: 1}]}}\ntask: regression\n"
        "dataset: {training: training.csv, validation: validation.csv}\n"
        "config: {max_epoch: 60, batch_size: 16, solver: {type: Adam, lr: 0.05}}\n"
    )
    assert cli("train", tmp_path / "reg.yaml", "-o", tmp_path / "run", "--quiet") == 0
    assert cli("evaluate", tmp_path / "run", "--dataset", tmp_path / "validation.csv") == 0
    report = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert report["r2"] > 0.95 and report["rmse"] < 0.3 and report["mae"] < report["rmse"] + 1e-9


def test_an_autoencoder_that_can_copy_anything_is_named_when_training_starts(tmp_path, samples, capsys):
    project = write_project(
        samples / "wide_ae.yaml",
        "{zoo: conv_autoencoder}",  # 28×28 → 7×7×32: a bottleneck wider than the image
        "digits_4or9_anomaly",
        1,
        "task: autoencoder\n",
    )
    assert cli("train", project, "-o", tmp_path / "wide", "--quiet") == 0
    assert "can learn to copy anomalies too" in capsys.readouterr().err
    narrow = write_project(
        samples / "narrow_ae.yaml",
        "{zoo: conv_autoencoder, options: {code: 16}}",
        "digits_4or9_anomaly",
        1,
        "task: autoencoder\n",
    )
    assert cli("train", narrow, "-o", tmp_path / "narrow", "--quiet") == 0
    assert "copy anomalies" not in capsys.readouterr().err
