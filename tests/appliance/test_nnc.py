"""Coming from Neural Network Console: NNC projects (.sdcproj) and nnabla models (.nnp) in, .nnp out,
checked against NNC's own tutorial projects and against nnabla itself (its own interpreter)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from appliance.datasets import create_sample
from appliance.datasets.nnp import NnpError, import_nnp
from appliance.datasets.nnp_export import export_nnp
from appliance.datasets.sdcproj import import_sdcproj, write_import
from appliance.datasets.sdcproj_graph import SdcprojError
from engine import Tensor, no_grad, seed
from models import bundle as bundle_io
from models.inference import Inferencer
from models.spec import build
from models.zoo import ZOO, get_spec
from tests.helpers.nnc import TUTORIALS, layer, nnabla, nnabla_cli, write_sdcproj

ROOT = Path(__file__).resolve().parents[2]
MNIST = Path("samples") / "sample_dataset" / "mnist"  # where NNC's tutorials look for their data


def appliance(*args: str | Path) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [sys.executable, "-m", "appliance.cli", *map(str, args)], capture_output=True, text=True, cwd=ROOT, timeout=600
    )
    return done


def nnc_dataset_root(tmp: Path, sample: str) -> Path:
    """Our digits sample laid out under the names NNC's tutorials give their datasets."""
    made = tmp / sample
    create_sample(sample, made)
    root = tmp / f"root-{sample}"
    (root / MNIST).mkdir(parents=True)
    shutil.copytree(made / "images", root / MNIST / "images")
    shutil.copy(made / "training.csv", root / MNIST / "small_mnist_4or9_training.csv")
    shutil.copy(made / "validation.csv", root / MNIST / "small_mnist_4or9_test.csv")
    return root


def short(project: Path, epochs: int) -> None:
    data = yaml.safe_load(project.read_text())
    data["config"]["max_epoch"] = epochs
    project.write_text(yaml.safe_dump(data, sort_keys=False))


# -- NNC's tutorials through the command line --------------------------------------------------
@pytest.mark.parametrize(
    ("tutorial", "sample", "epochs", "metric", "goal"),
    [
        ("01_logistic_regression", "digits_4or9", 40, "accuracy", 0.95),
        ("02_binary_cnn", "digits_4or9", 60, "accuracy", 0.98),
        ("06_auto_encoder", "digits_4or9_anomaly", 60, "auroc", 0.95),
    ],
)
def test_the_tutorial_projects_import_train_and_evaluate(tmp_path, tutorial, sample, epochs, metric, goal):
    """NNC's results: 01 ≥ 95 % validation accuracy, 02 ≥ 98 %, and 06 (trained on 4s and 9s only)
    reconstructs other digits worse: AUROC ≥ 0.95 with "not a 4 or 9" positive."""
    root = nnc_dataset_root(tmp_path, sample)
    out = appliance("nnc", "import", TUTORIALS / f"{tutorial}.sdcproj", "-o", tmp_path / "p", "--dataset-root", root)
    assert out.returncode == 0, out.stderr
    project = tmp_path / "p" / "project.yaml"
    short(project, epochs)
    assert appliance("network", "stats", tmp_path / "p" / "network.yaml").returncode == 0
    trained = appliance("train", project, "-o", tmp_path / "run", "--quiet")
    assert trained.returncode == 0, trained.stderr
    evaluated = appliance("evaluate", tmp_path / "run", "--dataset", root / MNIST / "small_mnist_4or9_test.csv")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())
    assert report[metric] >= goal, report


def test_imported_networks_give_the_statistics_nnc_shows():
    """Hand counts: 02's Convolution 16 5×5 on 1×28×28 (valid) → 16×24×24, 16·25 + 16 = 416 parameters,
    16·24·24·25 = 230,400 multiply-adds; the whole network 4,925 parameters."""
    from models.stats import network_stats

    expected = {
        "01_logistic_regression": [("Affine", (1,), 785, 784), ("Sigmoid", (1,), 0, 0)],
        "02_binary_cnn": [
            ("Convolution", (16, 24, 24), 416, 230_400),
            ("MaxPooling", (16, 12, 12), 0, 0),
            ("Tanh", (16, 12, 12), 0, 0),
            ("Convolution_2", (8, 8, 8), 8 * 16 * 25 + 8, 8 * 8 * 8 * 16 * 25),
            ("MaxPooling_2", (8, 4, 4), 0, 0),
            ("Tanh_2", (8, 4, 4), 0, 0),
            ("Affine", (10,), 128 * 10 + 10, 1280),
            ("Tanh_3", (10,), 0, 0),
            ("Affine_2", (1,), 11, 10),
            ("Sigmoid", (1,), 0, 0),
        ],
        "06_auto_encoder": [
            ("Dropout", (1, 28, 28), 0, 0),
            ("Affine", (256,), 784 * 256 + 256, 784 * 256),
            ("Sigmoid", (256,), 0, 0),
            ("Affine_2", (784,), 256 * 784 + 784, 256 * 784),
            ("Affine_2.shape", (1, 28, 28), 0, 0),
            ("Sigmoid_2", (1, 28, 28), 0, 0),
        ],
    }
    for tutorial, rows in expected.items():
        stats = network_stats(build(import_sdcproj(TUTORIALS / f"{tutorial}.sdcproj").network))
        got = [(r.name, tuple(r.output_shape), r.parameters, r.multiply_adds) for r in stats]
        assert got == rows, tutorial
    assert sum(r[2] for r in expected["02_binary_cnn"]) == 4925


# -- the .sdcproj format beyond the tutorials -------------------------------------------------------
def test_units_arguments_expressions_repeats_and_branches(tmp_path):
    """The multi-network form: a Unit whose network takes arguments (``Maps``) used in expressions
    over its input shape (``Input[0]*2``), repeated twice; residual (Add2) and concatenating branches."""
    block = [
        layer(0, "Input", Size="4,8,8"),
        layer(1, "Argument", Name="Maps", Value="4", Type="PInt"),
        layer(2, "Convolution", OutMaps="Maps", KernelShape="3,3", BorderMode="same"),
        layer(3, "ReLU"),
        layer(4, "Add2"),
    ]
    main = [
        layer(0, "Input", Size="3,8,8", Dataset="x"),
        layer(1, "Convolution", Name="stem", OutMaps="4", KernelShape="1,1"),
        layer(2, "RepeatStart", Times="n"),
        layer(3, "Unit", Name="block", Network="Block", Maps="Input[0]"),
        layer(4, "RepeatEnd"),
        layer(5, "Convolution", Name="wide", OutMaps="Input[0]*2", KernelShape="1,1"),
        layer(6, "MaxPooling", KernelShape="3,3", Strides="1,1", Padding="1,1"),
        layer(7, "Concatenate", Axis="0"),
        layer(8, "Affine", OutShape="3"),
        layer(9, "Softmax"),
        layer(10, "CategoricalCrossEntropy", **{"T.Dataset": "y"}),
        layer(11, "Argument", Name="n", Value="2", Type="PInt"),
        layer(12, "Comment", Comment="a note"),
    ]
    links = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (4, 6), (5, 7), (6, 7, 1), (7, 8), (8, 9), (9, 10)]
    project = write_sdcproj(
        tmp_path / "units.sdcproj",
        {"Main": (main, links), "Block": (block, [(0, 2), (2, 3), (3, 4), (0, 4, 1)])},
    )
    result = import_sdcproj(project)
    assert result.task == "classification"
    layers = result.network["layers"]
    assert [x["type"] for x in layers] == ["Convolution", "Residual", "Residual", "Concat", "Affine"]
    assert layers[1]["body"][0]["outmaps"] == 4 and layers[1]["shortcut"] is None  # Maps = Input[0] = 4
    assert layers[3]["branches"][0][0]["outmaps"] == 8  # Input[0]*2
    assert build(result.network).output_shape == (3,)


def test_the_sine_tutorials_side_output_becomes_the_score(tmp_path):
    """NNC's sensor tutorial outputs max squared error over time through a loss multiplied by 0:
    imported, it is the autoencoder's score (max) and a column of ``forward``/``evaluate``."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(80):
        wave = np.sin(np.linspace(0, 4 * np.pi, 32) + rng.uniform(0, 6.3)).reshape(32, 1)
        label = int(i >= 64)
        if label:
            wave[rng.integers(4, 28)] += 3.0  # a burst
        np.savetxt(tmp_path / f"w{i}.csv", wave, delimiter=",")
        rows.append(f"w{i}.csv,{label}")
    (tmp_path / "training.csv").write_text("x,y\n" + "\n".join(rows[:64]) + "\n")
    (tmp_path / "validation.csv").write_text("x,y\n" + "\n".join(rows[48:]) + "\n")
    main = [
        layer(0, "Input", Size="32,1", Dataset="x"),
        layer(1, "Transpose", Axes="1,0"),
        layer(2, "Convolution", OutMaps="8", KernelShape="5", BorderMode="same", Strides="2"),
        layer(3, "LeakyReLU", Alpha="0.1"),
        layer(4, "Deconvolution", OutMaps="1", KernelShape="6", Padding="2", Strides="2"),
        layer(5, "Transpose", Axes="1,0"),
        layer(6, "SquaredError", **{"T.Dataset": "x"}),
        layer(7, "Sub2"),
        layer(8, "PowScalar", Value="2.0"),
        layer(9, "Max", Axes="0", KeepDims="False"),
        layer(10, "SquaredError", Name="SquaredError_2", **{"T.Dataset": "max_se"}),
        layer(11, "MulScalar", Value="0"),
    ]
    links = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (0, 7), (5, 7, 1), (7, 8), (8, 9), (9, 10), (10, 11)]
    project = write_sdcproj(tmp_path / "sine.sdcproj", {"Main": (main, links)}, config="MaxEpoch=30\nBatchSize=16\n")
    result = import_sdcproj(project, tmp_path)
    assert result.task == "autoencoder" and result.project["score"] == {"name": "max_se", "reduce": "max"}
    write_import(result, tmp_path / "p")
    assert appliance("train", tmp_path / "p" / "project.yaml", "-o", tmp_path / "run", "--quiet").returncode == 0
    out = appliance("forward", "-c", tmp_path / "run", "-d", tmp_path / "validation.csv", "-o", tmp_path / "fwd")
    assert out.returncode == 0, out.stderr
    header = (tmp_path / "fwd" / "output_result.csv").read_text().splitlines()[0].split(",")
    assert header[-1] == "max_se'"
    report = appliance("evaluate", tmp_path / "run", "--dataset", tmp_path / "validation.csv")
    assert report.returncode == 0 and "auroc" in report.stdout
    assert json.loads((tmp_path / "run" / "evaluation" / "evaluation.json").read_text())["auroc"] > 0.9


def test_unsupported_layers_are_all_named_in_one_error(tmp_path):
    main = [
        layer(0, "Input", Size="1,8,8", Dataset="x"),
        layer(1, "BinaryConnectConvolution", OutMaps="2", KernelShape="3,3"),
        layer(2, "LSTMCell"),
        layer(3, "Affine", OutShape="1"),
        layer(4, "Sigmoid"),
        layer(5, "BinaryCrossEntropy", **{"T.Dataset": "y"}),
    ]
    project = write_sdcproj(tmp_path / "x.sdcproj", {"Main": (main, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)])})
    out = appliance("nnc", "import", project, "-o", tmp_path / "p")
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "[Layer_1] BinaryConnectConvolution" in out.stderr and "[Layer_2] LSTMCell" in out.stderr
    assert str(project) in out.stderr and not (tmp_path / "p").exists()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("not an ini file at all", "not an NNC project"),
        ("[Engine]\nSDeepEngineType=NNabla\n", "neither [Network_Global] nor [Global]"),
        ("[Network_Global]\nNumLayer=2\nNumLink=0\n[Layer_0]\nID=0\nType=Input\n", "section [Layer_1] is missing"),
        (
            "[Network_Global]\nNumLayer=1\nNumLink=1\n[Layer_0]\nID=0\nType=Input\nNumProperty=0\n"
            "[Link_0]\nSourceLayerID=0\nDestLayerID=7\n",
            "layer ID 7",
        ),
    ],
)
def test_malformed_projects_are_refused_naming_the_section(tmp_path, text, named):
    path = tmp_path / "bad.sdcproj"
    path.write_text(text)
    with pytest.raises(SdcprojError, match="bad.sdcproj") as error:
        import_sdcproj(path)
    assert named in str(error.value)


# -- nnabla's own models in, ours out ---------------------------------------------------------
@pytest.fixture(scope="module")
def nnabla_models(tmp_path_factory):
    """``.nnp`` files nnabla 1.39 made itself, one per layer family, with its outputs on random inputs."""
    folder = tmp_path_factory.mktemp("nnabla")
    nnabla("make", folder)
    return folder


FAMILIES = [
    "affine_mlp",
    "conv_bn_pool",
    "residual_concat",
    "deconv_autoencoder",
    "depthwise_group_activations",
    "shape_ops",
    "fused_bn",
    "upsampling",
]


@pytest.mark.parametrize("family", FAMILIES)
def test_nnabla_made_models_import_with_its_outputs(nnabla_models, tmp_path, family):
    """Our engine and onnxruntime reproduce nnabla's outputs within 1e-5 for every layer family."""
    bundle_path = tmp_path / "model.zip"
    import_nnp(nnabla_models / f"{family}.nnp", bundle_path)
    x, expected = np.load(nnabla_models / f"{family}.in.npy"), np.load(nnabla_models / f"{family}.out.npy")
    bundle = bundle_io.load(bundle_path)
    net = bundle.network("main")
    with no_grad():
        ours = net.module(Tensor(x)).data.reshape(expected.shape)
    served = ort.InferenceSession(bundle.onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(ours - expected).max() <= 1e-5
    assert np.abs(served.reshape(expected.shape) - expected).max() <= 1e-5


def test_an_imported_model_runs_in_forward_and_serves_through_onnxruntime(nnabla_models, tmp_path):
    out = appliance("nnc", "import", nnabla_models / "conv_bn_pool.nnp", "-o", tmp_path / "m.zip")
    assert out.returncode == 0 and ": classifier" in out.stdout, out.stderr
    x = np.load(nnabla_models / "conv_bn_pool.in.npy")
    for i, sample in enumerate(x):
        np.save(tmp_path / f"{i}.npy", sample)
    (tmp_path / "data.csv").write_text("x\n" + "".join(f"{i}.npy\n" for i in range(len(x))))
    fwd = appliance("forward", "-c", tmp_path / "m.zip", "-d", tmp_path / "data.csv", "-o", tmp_path / "out")
    assert fwd.returncode == 0, fwd.stderr
    rows = (tmp_path / "out" / "output_result.csv").read_text().splitlines()
    values = np.array([[float(v) for v in row.split(",")[1:]] for row in rows[1:]])
    assert np.abs(values - np.load(nnabla_models / "conv_bn_pool.out.npy")).max() <= 1e-5
    images = [sample.transpose(1, 2, 0) for sample in x]  # the line's H×W×C frames (float: scaled already)
    result = Inferencer(tmp_path / "m.zip").predict_batch(images)
    assert [r.label for r in result] == [str(i) for i in np.load(nnabla_models / "conv_bn_pool.out.npy").argmax(1)]


def _our_model(tmp: Path, name: str) -> tuple[Path, np.ndarray, np.ndarray]:
    seed(3)
    net = build(get_spec(name))
    x = np.random.default_rng(1).random((4, *net.input_shape)).astype(np.float32)
    net.module.train()
    net.module(Tensor(x))  # batch-normalization statistics away from their defaults
    net.module.eval()
    with no_grad():
        out = net.module(Tensor(x)).data
    path = tmp / f"{name}.zip"
    spec = {"kind": "vector", "shape": list(net.input_shape), "size": None}
    bundle_io.bundle_from_network(net, "regressor", spec).save(path)
    return path, x, out


@pytest.mark.parametrize("name", sorted(ZOO))
def test_our_models_export_to_nnp_that_nnabla_runs_with_our_outputs(tmp_path, name):
    bundle_path, x, ours = _our_model(tmp_path, name)
    export_nnp(bundle_path, tmp_path / "m.nnp")
    np.save(tmp_path / "x.npy", x)
    nnabla("forward", tmp_path / "m.nnp", tmp_path / "x.npy", tmp_path / "y.npy")
    assert np.abs(np.load(tmp_path / "y.npy").reshape(ours.shape) - ours).max() <= 1e-5


def test_nnabla_cli_forward_runs_an_exported_model_like_ours(tmp_path):
    """The exported .nnp has NNC's MainRuntime: ``nnabla_cli forward`` reads the dataset CSV as
    ``appliance forward`` does and writes the same y' columns."""
    bundle_path, x, _ = _our_model(tmp_path, "lenet")
    out = appliance("nnc", "export", bundle_path, tmp_path / "lenet.nnp")
    assert out.returncode == 0, out.stderr
    for i, sample in enumerate(x):
        np.save(tmp_path / f"{i}.npy", sample)
    (tmp_path / "data.csv").write_text("x\n" + "".join(f"{i}.npy\n" for i in range(len(x))))
    (tmp_path / "nn").mkdir()
    nnabla_cli("forward", "-c", tmp_path / "lenet.nnp", "-d", tmp_path / "data.csv", "-o", tmp_path / "nn")
    assert appliance("forward", "-c", bundle_path, "-d", tmp_path / "data.csv", "-o", tmp_path / "us").returncode == 0
    theirs = (tmp_path / "nn" / "output_result.csv").read_text().splitlines()
    ours = (tmp_path / "us" / "output_result.csv").read_text().splitlines()
    assert theirs[0].split(",")[1:] == ours[0].split(",")[1:]  # y'__0 … y'__9
    a = np.array([[float(v) for v in r.split(",")[1:]] for r in theirs[1:]])
    b = np.array([[float(v) for v in r.split(",")[1:]] for r in ours[1:]])
    assert np.abs(a - b).max() <= 1e-5


def test_broken_nnp_files_are_named_with_what_was_expected(nnabla_models, tmp_path):
    good = nnabla_models / "conv_bn_pool.nnp"
    truncated = tmp_path / "truncated.nnp"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(NnpError, match="truncated.nnp: not an .nnp"):
        import_nnp(truncated, tmp_path / "a.zip")

    def rewrite(name: str, change) -> Path:
        target = tmp_path / name
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(target, "w") as dst:
            for item in src.namelist():
                data = change(item, src.read(item))
                if data is not None:
                    dst.writestr(item, data)
        return target

    no_params = rewrite("no_params.nnp", lambda item, data: None if item.endswith(".h5") else data)
    with pytest.raises(
        NnpError, match=r"no_params.nnp: parameter 'c1/conv/W' of function .* not in the parameter file"
    ):
        import_nnp(no_params, tmp_path / "b.zip")

    def narrower_weights(item: str, data: bytes) -> bytes:  # c1's W for 2 input channels where the data has 3
        if not item.endswith(".h5"):
            return data
        import io

        import h5py

        buffer = io.BytesIO(data)
        with h5py.File(buffer, "a") as h5:
            del h5["c1/conv/W"]
            h5["c1/conv/W"] = np.zeros((6, 2, 3, 3), np.float32)
        return buffer.getvalue()

    wrong = rewrite("wrong_shape.nnp", narrower_weights)
    with pytest.raises(
        NnpError, match=r"wrong_shape.nnp: .*Convolution.* W has shape \(6, 2, 3, 3\), expected \(6, 3, 3, 3\)"
    ):
        import_nnp(wrong, tmp_path / "c.zip")
    unknown = rewrite(
        "unsupported.nnp",
        lambda item, data: (
            data.replace(b'type: "ReLU"', b'type: "LSTM"').replace(b'type: "Softmax"', b'type: "Sort"')
            if item.endswith(".nntxt")
            else data
        ),
    )
    out = appliance("nnc", "import", unknown, "-o", tmp_path / "d.zip")
    assert out.returncode == 2 and "(LSTM)" in out.stderr and "(Sort)" in out.stderr, out.stderr
    assert not (tmp_path / "d.zip").exists()


def test_an_imported_autoencoder_calibrated_on_normal_data_can_judge_parts(nnabla_models, tmp_path):
    """``--calibrate`` gives an nnabla autoencoder T1/T2 from normal samples (what the line needs to
    promote it); parts far from them are flagged."""
    rng = np.random.default_rng(5)
    for i in range(40):
        np.save(tmp_path / f"n{i}.npy", (rng.standard_normal((1, 16, 16)) * 0.1).astype(np.float32))
    (tmp_path / "normal.csv").write_text("x\n" + "".join(f"n{i}.npy\n" for i in range(40)))
    source = nnabla_models / "deconv_autoencoder.nnp"
    out = appliance("nnc", "import", source, "-o", tmp_path / "ae.zip", "--calibrate", tmp_path / "normal.csv")
    assert out.returncode == 0 and "autoencoder" in out.stdout and "on 40 normal samples" in out.stdout, out.stderr
    inferencer = Inferencer(tmp_path / "ae.zip")
    t1, t2 = inferencer.thresholds
    assert np.isfinite(t1) and np.isfinite(t2) and t1 <= t2
    assert bundle_io.load(tmp_path / "ae.zip").meta["provenance"]["calibrated_on"]["n"] == 40
    odd = [np.full((16, 16, 1), 40.0, np.float32)]  # float frames are taken as scaled already
    assert inferencer.predict_batch(odd)[0].decision == "ng"
    refused = appliance(
        "nnc",
        "import",
        nnabla_models / "affine_mlp.nnp",
        "-o",
        tmp_path / "c.zip",
        "--calibrate",
        tmp_path / "normal.csv",
    )
    assert refused.returncode == 2 and "applies to autoencoders; this is a classifier" in refused.stderr


def test_nnc_models_are_served_what_nncs_dataset_reader_fed_them():
    """With image normalisation 8-bit counts / 255, 16-bit / 65535 and float as stored; without
    it, every value as stored."""
    from appliance.datasets.nnc import nnc_image_spec
    from models.preprocess import preprocess_image

    scene = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
    # NNC's dataset reader without image normalisation gives the network every value as stored
    raw = nnc_image_spec(1, (8, 8), normalize=False)
    for image in (scene, scene.astype(np.uint16), scene.astype(np.float32)):
        np.testing.assert_allclose(preprocess_image(image, raw), scene[None].astype(np.float32))
    normalised = nnc_image_spec(1, (8, 8), normalize=True)  # 8-bit / 255, 16-bit / 65535, float as stored
    np.testing.assert_allclose(preprocess_image(scene.astype(np.float32), normalised), scene[None].astype(np.float32))
    np.testing.assert_allclose(preprocess_image(scene.astype(np.uint16), normalised), scene[None] / 65535, rtol=1e-6)
