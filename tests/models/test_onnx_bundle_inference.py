"""ONNX parity, the bundle file, and onnxruntime serving."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine import Tensor, losses, no_grad, seed
from engine.solvers import Adam
from models import bundle as bundle_io
from models.inference import Inferencer
from models.onnx_export import to_onnx
from models.preprocess import InputSpec, PreprocessError
from models.spec import build
from models.zoo import ZOO, get_spec

ROOT = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(0)


def run_onnx(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def engine_eval(net, x):
    net.module.eval()
    with no_grad():
        return net.module(Tensor(x)).data


def settle_batch_norm(net, x):
    """Move running statistics away from their defaults so the export must carry them."""
    net.module.train()
    net.module(Tensor(x))
    net.module.eval()


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_network_matches_onnxruntime(name):
    seed(1)
    net = build(get_spec(name))
    x = RNG.random((3, *net.input_shape)).astype(np.float32)
    settle_batch_norm(net, x)
    model = to_onnx(net.module, net.input_shape, name)
    assert not {n.op_type for n in model.graph.node} & {"SoftmaxCrossEntropyLoss", "NegativeLogLikelihoodLoss"}
    assert np.abs(engine_eval(net, x) - run_onnx(model, x)).max() <= 1e-4


LAYER_VARIANTS = {
    "pool_ignore_border_false": [{"type": "MaxPooling", "kernel": 3, "stride": 2, "ignore_border": False, "pad": 1}],
    "average_pool_padded": [{"type": "AveragePooling", "kernel": 3, "stride": 2, "pad": 1, "ignore_border": False}],
    "sum_pool": [{"type": "SumPooling", "kernel": [2, 3], "stride": [2, 1]}],
    "global_average": [{"type": "GlobalAveragePooling"}, {"type": "Flatten"}],
    "bilinear": [{"type": "Upsample", "scale": 2, "mode": "bilinear"}],
    "unpooling": [{"type": "Unpooling", "kernel": [2, 3]}],
    "activations": [
        {"type": "Convolution", "outmaps": 4, "kernel": 3, "pad": 1},
        {"type": "ELU"},
        {"type": "SELU"},
        {"type": "Swish"},
        {"type": "GELU"},
        {"type": "GELU", "approximate": "tanh"},
        {"type": "LeakyReLU", "alpha": 0.2},
        {"type": "PReLU", "shared": False},
        {"type": "Tanh"},
    ],
    "depthwise_dilated": [{"type": "DepthwiseConvolution", "kernel": 3, "multiplier": 2, "dilation": 2, "pad": 2}],
    "grouped_strided": [
        {"type": "Convolution", "outmaps": 4, "kernel": [3, 2], "stride": [2, 1], "group": 2, "border_mode": "same"}
    ],
    "deconv_output_padding": [
        {"type": "Deconvolution", "outmaps": 4, "kernel": 3, "stride": 2, "pad": 1, "output_padding": 1, "group": 2}
    ],
    "softmax_head": [{"type": "Flatten"}, {"type": "Affine", "n_outmaps": 5}, {"type": "Softmax"}],
    "log_softmax_head": [{"type": "Affine", "n_outmaps": 5}, {"type": "LogSoftmax"}],
    "dropout_is_removed": [{"type": "Dropout", "p": 0.5}, {"type": "BatchNormalization"}],
    "scalar_scaling": [{"type": "MulScalar", "value": 0.01735}, {"type": "AddScalar", "value": -1.99}],
    "slice": [{"type": "Slice", "start": [0, 1, 2], "stop": [2, 8, 7], "step": [1, 2, 1]}],
    "transpose": [{"type": "Transpose", "axes": [2, 0, 1]}, {"type": "Convolution", "outmaps": 3, "kernel": 2}],
}


@pytest.mark.parametrize("variant", sorted(LAYER_VARIANTS))
def test_layer_variants_match_onnxruntime(variant):
    seed(2)
    net = build({"name": variant, "input": [2, 9, 7], "layers": LAYER_VARIANTS[variant]})
    x = RNG.standard_normal((2, 2, 9, 7)).astype(np.float32)
    settle_batch_norm(net, x)
    assert np.abs(engine_eval(net, x) - run_onnx(to_onnx(net.module, net.input_shape), x)).max() <= 1e-4


def test_one_dimensional_sensor_layers_match_onnxruntime():
    net = build(
        {
            "input": [3, 16],
            "layers": [
                {"type": "Convolution", "outmaps": 4, "kernel": 3, "pad": 1},
                {"type": "MaxPooling", "kernel": 2},
                {"type": "Deconvolution", "outmaps": 3, "kernel": 2, "stride": 2},
                {"type": "AveragePooling", "kernel": 3, "stride": 1, "pad": 1},
            ],
        }
    )
    x = RNG.standard_normal((2, 3, 16)).astype(np.float32)
    assert np.abs(engine_eval(net, x) - run_onnx(to_onnx(net.module, net.input_shape), x)).max() <= 1e-4


# -- every registered model: train a few steps → bundle → load → onnxruntime -----------------
def loss_for(task: str, out, x_shape, rng):
    n = out.shape[0]
    if task == "classification":
        if out.shape[1] == 1:
            return losses.binary_cross_entropy(out, rng.integers(0, 2, (n, 1)).astype(np.float32)).mean()
        return losses.softmax_cross_entropy(out, rng.integers(0, out.shape[1], (n, 1))).mean()
    if task == "segmentation":
        return losses.sigmoid_cross_entropy(out, (rng.random(out.shape) > 0.9).astype(np.float32)).mean()
    return None


@pytest.mark.parametrize("name", sorted(ZOO))
def test_registered_model_trains_bundles_and_serves(tmp_path, name):
    seed(3)
    entry = ZOO[name]
    net = build(get_spec(name))
    rng = np.random.default_rng(4)
    x = rng.random((8, *net.input_shape)).astype(np.float32)
    solver = Adam(net.module, lr=1e-3)
    for _ in range(3):
        out = net.module(Tensor(x))
        loss = loss_for(entry.task, out, x.shape, rng)
        if loss is None:  # autoencoders reconstruct their input
            loss = losses.squared_error(out, x).mean()
        solver.zero_grad()
        loss.backward()
        solver.update()
    kind = {"classification": "classifier", "autoencoder": "autoencoder", "segmentation": "regressor"}[entry.task]
    shape = net.input_shape
    spec = (
        InputSpec(kind="image", channels=shape[0], size=shape[1:], scale=1.0)
        if len(shape) == 3 and shape[0] in (1, 3)
        else InputSpec(kind="vector", shape=shape)
    )
    path = tmp_path / f"{name}.zip"
    bundle_io.bundle_from_network(net, kind, spec.to_dict()).save(path)
    loaded = bundle_io.load(path)
    rebuilt = loaded.network("main")
    np.testing.assert_allclose(engine_eval(rebuilt, x), engine_eval(net, x), atol=1e-6)
    inferencer = Inferencer(path)
    samples = [
        xi[0] if spec.kind == "image" and shape[0] == 1 else (xi.transpose(1, 2, 0) if spec.kind == "image" else xi)
        for xi in x
    ]
    results = inferencer.predict_batch(samples)
    assert len(results) == 8 and all(r.model_version == loaded.version for r in results)
    if kind in ("classifier", "regressor"):
        served = np.array([r.output for r in results]).reshape(engine_eval(net, x).shape)
        if kind == "classifier" and served.shape[1] > 1:  # logits served as probabilities
            e = np.exp(engine_eval(net, x) - engine_eval(net, x).max(axis=1, keepdims=True))
            np.testing.assert_allclose(served, e / e.sum(axis=1, keepdims=True), atol=1e-4)
        else:
            np.testing.assert_allclose(served, engine_eval(net, x), atol=1e-4)
    else:
        expected = ((x - engine_eval(net, x)) ** 2).reshape(8, -1).mean(axis=1)
        if spec.kind == "vector":
            np.testing.assert_allclose([r.score for r in results], expected, rtol=1e-3, atol=1e-6)
        else:
            assert results[0].anomaly_map.shape == shape[1:]


# -- the bundle file ------------------------------------------------------------------------------
@pytest.fixture
def saved_bundle(tmp_path):
    net = build(get_spec("logistic_regression", [1, 8, 8]))
    spec = InputSpec(kind="image", channels=1, size=(8, 8))
    post = {"calibration": {"t1": 0.3, "t2": 0.6, "median": 0.1}}
    path = tmp_path / "model.zip"
    digest = bundle_io.bundle_from_network(
        net, "classifier", spec.to_dict(), labels=["four", "nine"], postprocess=post
    ).save(path)
    return path, digest, net


def test_bundle_holds_the_three_members(saved_bundle):
    path, digest, _ = saved_bundle
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["model.json", "model.onnx", "params.npz"]
        meta = json.loads(zf.read("model.json"))
    assert meta["format_version"] == bundle_io.FORMAT_VERSION and meta["labels"] == ["four", "nine"]
    assert meta["networks"]["main"]["name"] == "logistic_regression" and "created_at" in meta
    assert digest == bundle_io.file_digest(path) and len(digest) == 64


def rewrite(path: Path, replace: dict[str, bytes | None]) -> None:
    with zipfile.ZipFile(path) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    for name, data in replace.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt or truncated"),
        (lambda p: p.write_bytes(b"garbage" * 100), "not a model bundle"),
        (lambda p: rewrite(p, {"params.npz": None}), "bundle lacks params.npz"),
        (lambda p: rewrite(p, {"model.json": b"{not json"}), "model.json is not valid JSON"),
        (
            lambda p: rewrite(
                p,
                {
                    "model.json": json.dumps(
                        {"format_version": 99, "kind": "detector", "networks": {}, "input": {}}
                    ).encode()
                },
            ),
            "bundle format 99 is newer than this software reads",
        ),
        (lambda p: rewrite(p, {"params.npz": b"PK\x03\x04 broken"}), "params.npz is unreadable"),
    ],
)
def test_damaged_bundles_are_refused_clearly(saved_bundle, damage, message):
    path = saved_bundle[0]
    damage(path)
    with pytest.raises(bundle_io.BundleError, match=message):
        bundle_io.load(path)


def test_pickled_parameters_are_refused(saved_bundle):
    import io

    buf = io.BytesIO()
    np.save(buf, np.array([object()], dtype=object), allow_pickle=True)
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as zf:
        zf.writestr("main/layers.0.W.npy", buf.getvalue())
    rewrite(saved_bundle[0], {"params.npz": npz.getvalue()})
    with pytest.raises(bundle_io.BundleError, match="params.npz is unreadable"):
        bundle_io.load(saved_bundle[0]).params["main/layers.0.W"]


def test_serving_needs_no_engine(saved_bundle):
    """The inferencer runs with the engine (and all training code) made unimportable."""
    code = (
        "import sys; sys.modules['engine'] = None\n"
        "import numpy as np\n"
        "from models.inference import Inferencer\n"
        f"r = Inferencer({str(saved_bundle[0])!r}).predict(np.zeros((8, 8), np.uint8))\n"
        "assert 'engine' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
        "print(r.label, r.decision)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] in ("four", "nine")


def test_thresholds_change_at_run_time_without_reloading(saved_bundle):
    inferencer = Inferencer(saved_bundle[0])
    image = (RNG.random((8, 8)) * 255).astype(np.uint8)
    first = inferencer.predict(image)
    assert inferencer.thresholds == (0.3, 0.6)
    inferencer.set_thresholds(first.score + 1, first.score + 2)
    assert inferencer.predict(image).decision == "ok"
    inferencer.set_thresholds(first.score - 1e-3, first.score - 1e-3)
    assert inferencer.predict(image).decision == "ng"
    assert inferencer.predict(image).norm_score >= 0.5
    with pytest.raises(ValueError, match="T1 <= T2"):
        inferencer.set_thresholds(0.9, 0.1)


def test_batch_and_single_agree_and_bad_inputs_are_named(saved_bundle):
    inferencer = Inferencer(saved_bundle[0])
    images = [(RNG.random((16, 16)) * 255).astype(np.uint8) for _ in range(4)]  # resized to 8×8
    batch = inferencer.predict_batch(images)
    single = [inferencer.predict(im) for im in images]
    assert [r.score for r in batch] == pytest.approx([r.score for r in single], abs=1e-6)
    with pytest.raises(PreprocessError, match="dtype int64"):
        inferencer.predict(np.zeros((8, 8), np.int64))
    with pytest.raises(PreprocessError, match="NaN"):
        inferencer.predict(np.full((8, 8), np.nan, np.float32))
    with pytest.raises(PreprocessError, match="1, 3 or 4 channels"):
        inferencer.predict(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(PreprocessError, match="empty"):
        inferencer.predict(np.zeros((0, 8), np.uint8))


def test_vector_preprocessing_names_the_problem():
    from models.preprocess import preprocess_vector

    spec = InputSpec(kind="vector", shape=(2, 3), mean=[0.0] * 6, std=[2.0] * 6)
    np.testing.assert_allclose(preprocess_vector(np.arange(6), spec), np.arange(6).reshape(2, 3) / 2)
    with pytest.raises(PreprocessError, match=r"has 5 values"):
        preprocess_vector(np.zeros(5), spec)
    with pytest.raises(PreprocessError, match=r"NaN or infinite values \(first at index \[0, 2\]\)"):
        preprocess_vector([0, 0, np.nan, 0, 0, 0], spec)
    with pytest.raises(PreprocessError, match="not numeric"):
        preprocess_vector(["a"] * 6, spec)
    with pytest.raises(PreprocessError, match="unknown key 'colour'"):
        InputSpec.from_dict({"kind": "image", "colour": 1})


def test_sixteen_bit_images_are_read_at_the_depth_their_camera_wrote():
    """A 12-bit camera's 16-bit files (values up to 4,095) read with a 12-bit full scale look as
    the same scene in 8 bits does; read as 16-bit they would be 16 times too dark."""
    from models.preprocess import bit_depth_of, preprocess_image

    assert [bit_depth_of(v) for v in (0, 255, 256, 1023, 4095, 4096, 16383, 65535)] == [8, 8, 9, 10, 12, 13, 14, 16]
    scene = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
    twelve = (scene.astype(np.int64) * 4095 // 255).astype(np.uint16)
    spec = InputSpec(kind="image", channels=1, size=(8, 8), bit_depth=12)
    np.testing.assert_allclose(preprocess_image(twelve, spec), preprocess_image(scene, spec), atol=1e-3)
    old = {k: v for k, v in spec.to_dict().items() if k != "bit_depth"}  # a bundle from before the field
    assert InputSpec.from_dict(old).bit_depth == 16
    np.testing.assert_allclose(preprocess_image(twelve, InputSpec.from_dict(old)).max(), twelve.max() / 65535)
    for bad in (7, 17):
        with pytest.raises(PreprocessError, match=f"bit_depth must be 8 to 16 .*got {bad}"):
            InputSpec(kind="image", bit_depth=bad)


def test_a_region_of_interest_holds_only_on_frames_of_the_size_it_was_drawn_on():
    """Pixel coordinates mean nothing on a frame of another size (a new camera, binning changed):
    such a frame is refused, naming both sizes, rather than judged on the wrong region."""
    from models.preprocess import preprocess_image

    framed = InputSpec(kind="image", channels=1, size=(8, 8), roi=(2, 2, 4, 4), frame_size=(8, 8))
    assert preprocess_image(np.zeros((8, 8), np.uint8), framed).shape == (1, 8, 8)
    with pytest.raises(PreprocessError, match=r"the frame is 16×8; the region of interest \[2, 2, 4, 4\] was drawn"):
        preprocess_image(np.zeros((8, 16), np.uint8), framed)
    unframed = InputSpec.from_dict({k: v for k, v in framed.to_dict().items() if k != "frame_size"})  # older bundles
    assert preprocess_image(np.zeros((8, 16), np.uint8), unframed).shape == (1, 8, 8)
    with pytest.raises(PreprocessError, match="'frame_size' has value"):
        InputSpec(kind="image", frame_size=(0, 8))


def test_images_of_measured_values_are_read_over_the_span_fit_found():
    """Float or signed images (heights in mm, temperatures) are read from the spec's value_range
    low as black to high as white, the same at every frame (never stretched per image, which would
    hide a part that is hotter or higher all over); values outside go through unclipped; missing
    readings (NaN) read as black."""
    from models.preprocess import preprocess_image, value_range_of

    scene = np.random.default_rng(0).integers(0, 256, (8, 8)).astype(np.uint8)
    heights = 40.0 + scene.astype(np.float32) * (20.0 / 255)  # 40 to 60 mm
    spec = InputSpec(kind="image", channels=1, size=(8, 8), value_range=value_range_of(40.0, 60.0))
    np.testing.assert_allclose(preprocess_image(heights, spec), preprocess_image(scene, spec), atol=1e-5)
    raised = preprocess_image(heights + 2.0, spec)  # the whole part 2 mm higher
    np.testing.assert_allclose(raised - preprocess_image(heights, spec), 0.1, atol=1e-5)
    assert raised.max() > 1.0
    signed = (scene.astype(np.int16) - 128) * 10  # a signed 16-bit image (-1280 to 1270)
    spec = InputSpec(kind="image", channels=1, size=(8, 8), value_range=value_range_of(-1280, 1270))
    np.testing.assert_allclose(preprocess_image(signed, spec), preprocess_image(scene, spec), atol=1e-5)
    holes = heights.copy()
    holes[2:4, 5] = np.nan  # a 3-D sensor's missing readings (a shadow, a glint)
    holes[7, 7] = np.inf
    spec = InputSpec(kind="image", channels=1, size=(8, 8), value_range=value_range_of(40.0, 60.0))
    read = preprocess_image(holes, spec)[0]
    assert (read[2:4, 5] == 0).all() and read[7, 7] == 0  # read as the span's low: black
    np.testing.assert_allclose(read[0], preprocess_image(heights, spec)[0, 0], atol=1e-5)
    with pytest.raises(PreprocessError, match="holds no readings: every value is NaN or infinite"):
        preprocess_image(np.full((8, 8), np.nan, np.float32), spec)
    assert value_range_of(5.0, 5.0) == (5.0, 6.0)  # a flat image: a span of 1
    assert InputSpec.from_dict(spec.to_dict() | {"value_range": [-1280, 1270]}).value_range == (-1280.0, 1270.0)
    old = {k: v for k, v in spec.to_dict().items() if k != "value_range"}  # a bundle from before the field:
    for scale in (1 / 255, 1.0):  # float values as stored, whatever the scale of 8-bit counts
        old_spec = InputSpec.from_dict(old | {"scale": scale})
        np.testing.assert_allclose(preprocess_image(scene / 255.0, old_spec), scene[None] / 255.0, rtol=1e-6)
    for bad in ([1.0, 1.0], [0.0, float("nan")], [0.0], "0,1", [True, 2]):
        with pytest.raises(PreprocessError, match="'value_range' has value"):
            InputSpec(kind="image", value_range=bad)
    for bad in (scene > 0, scene.astype(np.int64)):  # a Python list of 8-bit values is int64: refused, not misread
        with pytest.raises(PreprocessError, match=f"dtype {bad.dtype} is none that images are stored in"):
            preprocess_image(bad, spec)


def test_a_model_reads_only_the_kind_of_image_it_was_fitted_on():
    """Counts (8- or 16-bit) and measured values (float or signed) are read differently: a height
    map given to a model fitted on 8-bit pictures would be read as stored (40 mm as 40 times white)
    and every frame called NG. The spec's ``pixels`` refuses the other kind, naming both; specs
    without it (NNC's reader, older bundles) read any kind as stored."""
    from models.preprocess import preprocess_image, value_range_of

    counts = InputSpec(kind="image", channels=1, size=(8, 8), pixels="counts")
    values = InputSpec(kind="image", channels=1, size=(8, 8), value_range=value_range_of(40, 60), pixels="values")
    heights = np.full((8, 8), 50.0, np.float32)
    for image in (np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.uint16)):
        assert preprocess_image(image, counts).shape == (1, 8, 8)
        with pytest.raises(PreprocessError, match=rf"holds counts \(8- or 16-bit\) \({image.dtype}\); the model was "):
            preprocess_image(image, values)
    for image in (heights, heights.astype(np.int16)):
        np.testing.assert_allclose(preprocess_image(image, values), 0.5)
        with pytest.raises(PreprocessError, match=r"holds measured values .*fitted on images of counts \(8- or 16"):
            preprocess_image(image, counts)
    anything = InputSpec.from_dict({k: v for k, v in counts.to_dict().items() if k != "pixels"})
    assert preprocess_image(heights / 100, anything).max() == pytest.approx(0.5)
    assert InputSpec.from_dict(values.to_dict()) == values
    with pytest.raises(PreprocessError, match="'pixels' has value 'float'"):
        InputSpec(kind="image", pixels="float")
    with pytest.raises(PreprocessError, match="'pixels' is 'values' without a 'value_range'"):
        InputSpec(kind="image", pixels="values")


def test_bundles_made_in_the_same_second_get_distinct_versions():
    """The registry keys models by version: a first start and a retrain finishing in one second
    (it happened on a fast machine) must not collide."""
    spec = InputSpec(kind="image", channels=1, size=(8, 8)).to_dict()
    versions = {bundle_io.new_meta("detector", "d", {}, spec)["version"] for _ in range(50)}
    assert len(versions) == 50
    assert all(re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{6}", v) for v in versions)
