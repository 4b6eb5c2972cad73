"""Neural Network Console projects (``.sdcproj``) as our project file and network spec.

``appliance nnc import PROJECT.sdcproj -o DIR [--dataset-root ROOT]`` writes ``DIR/network.yaml``
and ``DIR/project.yaml``, which ``appliance train`` and ``appliance network stats`` run unchanged.

An ``.sdcproj`` is an INI file (see ``../shared/nnc/FORMATS.md``): ``[Layer_i]`` sections with
``Property_j_Name`` / ``Property_j_Value`` pairs (values may refer to another property with a
leading ``*``), ``[Link_i]`` edges, ``[Dataset_i]``, ``[Config]``, ``[Optimizer_i]`` and
``[StructureSearch]``. Projects with several networks (``[Global] NumNetwork``) prefix each
network's sections with its name; the network the optimizer trains is imported.

What NNC's layers become (:mod:`appliance.datasets.sdcproj_graph`), with NNC's defaults where a
property is missing: Affine (an ``OutShape`` of several axes adds a Reshape), Convolution,
DepthwiseConvolution, Deconvolution, the poolings, Unpooling, BatchNormalization (decay 0.9,
eps 1e-4), Dropout, Reshape, Transpose, Slice, MulScalar / AddScalar / RSubScalar, the
activations; Add2 and Concatenate closing the branches of a fork become Residual and Concat;
RepeatStart … RepeatEnd is unrolled; a Unit is replaced by its network; properties may be
expressions over the input's shape and the network's arguments. The loss gives the task; a loss
multiplied by 0 that measures the squared error over the input (the sine tutorial's ``max_se``)
becomes the autoencoder's score. Every layer that feeds the output and that we do not have is
listed in one error.
"""

from __future__ import annotations

import configparser
import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PureWindowsPath
from typing import Any

import yaml

from appliance.datasets.nnc_graph import GraphError, nested_layers
from appliance.datasets.sdcproj_graph import Built, Layer, Network, ProjectGraph, SdcprojError, Values

SOLVER_NAMES = {
    "sgd": "SGD",
    "momentum": "Momentum",
    "nesterov": "Nesterov",
    "adagrad": "AdaGrad",
    "adadelta": "AdaDelta",
    "rmsprop": "RMSprop",
    "adam": "Adam",
    "adamw": "AdamW",
    "adamax": "Adamax",
    "amsgrad": "AMSGrad",
    "adabound": "AdaBound",
}
SOLVER_PARAMETERS = {
    "alpha": "lr",
    "learningrate": "lr",
    "eta": "lr",
    "beta1": "beta1",
    "beta2": "beta2",
    "epsilon": "eps",
    "eps": "eps",
    "momentum": "momentum",
    "decay": "decay",
    "finallr": "final_lr",
    "gamma": "gamma",
}


@dataclass
class ImportResult:
    project: dict[str, Any]
    network: dict[str, Any]
    task: str
    notes: list[str] = field(default_factory=list)


def read_ini(path: Path, text: str | None = None) -> configparser.ConfigParser:
    """The project's INI sections (``text`` when given, e.g. an upload, else the file's)."""
    ini = configparser.ConfigParser(interpolation=None, strict=False, delimiters=("=",))
    ini.optionxform = str  # NNC's keys are case sensitive
    try:
        text = path.read_text(encoding="utf-8-sig") if text is None else text.removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError) as exc:
        msg = f"{path}: cannot read the project ({exc})"
        raise SdcprojError(msg) from exc
    try:
        ini.read_string(text, source=str(path))
    except configparser.Error as exc:
        msg = f"{path}: not an NNC project (INI format): {exc}".splitlines()[0]
        raise SdcprojError(msg) from exc
    return ini


def _section(ini: configparser.ConfigParser, name: str, where: Path) -> configparser.SectionProxy:
    if not ini.has_section(name):
        msg = f"{where}: section [{name}] is missing"
        raise SdcprojError(msg)
    return ini[name]


def _int(section: configparser.SectionProxy, key: str, where: Path, default: int | None = None) -> int:
    value = section.get(key)
    if value is None and default is not None:
        return default
    try:
        return int(str(value))
    except ValueError:
        msg = f"{where}: [{section.name}] {key} is {value!r}, not an integer"
        raise SdcprojError(msg) from None


def read_networks(ini: configparser.ConfigParser, where: Path) -> dict[str, Network]:
    """Every network of the project: ``Main`` in the one-network form, else those ``[Global]`` names."""
    if ini.has_section("Network_Global"):
        return {"Main": _read_network(ini, "Main", "", where)}
    if not ini.has_section("Global"):
        msg = f"{where}: neither [Network_Global] nor [Global] is there; not an NNC project"
        raise SdcprojError(msg)
    glob = ini["Global"]
    names = [glob.get(f"Network_{k}") for k in range(_int(glob, "NumNetwork", where))]
    missing = [n for n in names if not n or not ini.has_section(f"{n}_Network_Global")]
    if missing:
        msg = f"{where}: network {missing[0]!r} named in [Global] has no [{missing[0]}_Network_Global] section"
        raise SdcprojError(msg)
    return {n: _read_network(ini, n, f"{n}_", where) for n in names}


def trained_network(ini: configparser.ConfigParser, networks: dict[str, Network]) -> str:
    """The network the first optimizer trains (NNC's ``Main`` by default)."""
    named = ini["Optimizer_0"].get("Optimizer_NetworkName") if ini.has_section("Optimizer_0") else None
    for name in (named, "Main"):
        if name in networks:
            return name
    return next(iter(networks))


def _read_network(ini: configparser.ConfigParser, name: str, prefix: str, where: Path) -> Network:
    glob = _section(ini, f"{prefix}Network_Global", where)
    layers = []
    for i in range(_int(glob, "NumLayer", where)):
        sec = _section(ini, f"{prefix}Layer_{i}", where)
        props = {}
        for j in range(_int(sec, "NumProperty", where, 0)):
            key = sec.get(f"Property_{j}_Name")
            if key is None:
                msg = f"{where}: [{sec.name}] has no Property_{j}_Name"
                raise SdcprojError(msg)
            props[key] = sec.get(f"Property_{j}_Value", "")
        if "Type" not in sec or "ID" not in sec:
            msg = f"{where}: [{sec.name}] needs ID and Type"
            raise SdcprojError(msg)
        layers.append(Layer(sec.name, sec["ID"], sec["Type"], props))
    links = []
    for i in range(_int(glob, "NumLink", where)):
        sec = _section(ini, f"{prefix}Link_{i}", where)
        try:
            pins = int(sec.get("SourcePinIndex", "0")), int(sec.get("DestPinIndex", "0"))
            links.append((sec["SourceLayerID"], pins[0], sec["DestLayerID"], pins[1]))
        except (KeyError, ValueError) as exc:
            msg = f"{where}: [{sec.name}] needs SourceLayerID, DestLayerID and integer pin indexes"
            raise SdcprojError(msg) from exc
    return Network(name, layers, links)


def _task(built: Built, network: list[dict], notes: list[str]) -> str:
    """The loss layer gives the task (and, for a loss on probabilities, the network's head)."""
    loss = built.loss.layer
    target = loss.raw("T.Dataset") or ""
    if loss.type in ("SquaredError", "AbsoluteError", "HuberLoss", "EpsilonInsensitiveLoss"):
        if loss.type != "SquaredError":
            notes.append(f"{loss.label}: trained with squared error, the loss our tasks use")
        return "autoencoder" if target == built.input_layer.raw("Dataset") else "regression"
    if loss.type == "CategoricalCrossEntropy":
        if network and network[-1]["type"] == "Softmax":
            network.pop()
            notes.append("the Softmax before CategoricalCrossEntropy is dropped: our classification loss takes logits")
        return "classification"
    if loss.type == "SigmoidCrossEntropy":
        network.append({"type": "Sigmoid", "name": f"{loss.name}.sigmoid"})
        notes.append("SigmoidCrossEntropy: a Sigmoid is added, the network outputs a probability")
        return "classification"
    if loss.type in ("BinaryCrossEntropy", "SoftmaxCrossEntropy"):
        return "classification"
    msg = f"{loss.label}: this loss has no task of ours"
    raise SdcprojError(msg)


def dataset_path(uri: str, project: Path, root: Path | None) -> str:
    """An NNC dataset URI as a local path: ``{SDCPATH}`` and Windows separators rewritten; with
    ``root``, the file under it (its path below ``{SDCPATH}``, or only its name)."""
    rel = uri.replace("{SDCPATH}", "")
    parts = PureWindowsPath(rel).parts if "\\" in rel else Path(rel).parts
    parts = tuple(p for p in parts if p not in ("/", "\\") and not re.fullmatch(r"[A-Za-z]:\\?", p))
    if root is not None:
        for k in range(len(parts)):
            candidate = root.joinpath(*parts[k:])
            if candidate.is_file():
                return str(candidate.resolve())
        return str(root.joinpath(*parts[-1:]).resolve())
    return str((project.parent.joinpath(*parts)).resolve())


def _dataset_names(ini: configparser.ConfigParser) -> tuple[str, str]:
    """The dataset the optimizer trains on and the one the validation monitor reads (NNC's
    Training and Validation unless the project names others)."""
    training = (
        ini["Optimizer_0"].get("Optimizer_DatasetName", "Training") if ini.has_section("Optimizer_0") else "Training"
    )
    validation = "Validation"
    for k in range(8):
        sec = f"Monitor_{k}"
        if ini.has_section(sec) and ini[sec].get("Monitor_Name", "").startswith("valid"):
            validation = ini[sec].get("Monitor_DatasetName", validation)
    return training, validation


def _config(ini: configparser.ConfigParser, notes: list[str], where: Path) -> dict[str, Any]:
    cfg = ini["Config"] if ini.has_section("Config") else {}
    out: dict[str, Any] = {
        "max_epoch": _int(cfg, "MaxEpoch", where, 10) if cfg else 10,
        "batch_size": _int(cfg, "BatchSize", where, 64) if cfg else 64,
        "save_best": str(cfg.get("SaveBest", "1")) == "1" if cfg else True,
        "monitor_interval": max(1, _int(cfg, "MonitorInterval", where, 1)) if cfg else 1,
    }
    if not ini.has_section("Optimizer_0"):
        return out
    opt = ini["Optimizer_0"]
    name = opt.get("SolverName", "Adam")
    solver_type = SOLVER_NAMES.get(name.lower())
    if solver_type is None:
        msg = f"{where}: [Optimizer_0] SolverName {name!r} is not a solver we have ({', '.join(SOLVER_NAMES.values())})"
        raise SdcprojError(msg)
    solver: dict[str, Any] = {"type": solver_type}
    for k in range(_int(opt, "SolverParameterNum", where, 0)):
        key, value = opt.get(f"SolverParameterName_{k}", ""), opt.get(f"SolverParameter_{k}", "")
        ours = SOLVER_PARAMETERS.get(key.lower())
        if ours is None:
            notes.append(f"[Optimizer_0] solver parameter {key} has no counterpart here; left at our default")
            continue
        try:
            solver[ours] = float(value)
        except ValueError:
            msg = f"{where}: [Optimizer_0] SolverParameter_{k} ({key}) is {value!r}, not a number"
            raise SdcprojError(msg) from None
    out["solver"] = solver
    decay = float(opt.get("WeightDecay", "0") or 0)
    if decay:
        out["weight_decay"] = decay
    scheduler = _scheduler(opt, notes)
    if scheduler:
        out["scheduler"] = scheduler
    return out


def _scheduler(opt: configparser.SectionProxy, notes: list[str]) -> dict[str, Any] | None:
    kind = (opt.get("LearningRateScheduler") or "Exponential").lower()
    multiplier = float(opt.get("LearningRateMultiplier", "1") or 1)
    interval = int(float(opt.get("LearningRateUpdateInterval", "1") or 1))
    per_epoch = opt.get("LearningRateUpdateIntervalUnit", "1") == "1"
    warmup = opt.get("LearningRateWarmupLength", "0")
    warmup_epochs = int(float(warmup)) if warmup.replace(".", "", 1).isdigit() else 0
    if opt.get("LearningRateWarmupLengthUnit", "1") != "1" and warmup_epochs:
        notes.append("the warm-up is given in iterations; imported as that many epochs is wrong, so left out")
        warmup_epochs = 0
    out: dict[str, Any] | None = None
    if kind == "exponential" and multiplier != 1:
        if not per_epoch:
            notes.append(
                f"the learning rate is multiplied by {multiplier} every {interval} iterations; imported per epoch"
            )
        out = (
            {"type": "step", "gamma": multiplier, "step_epochs": interval}
            if interval > 1
            else {"type": "exponential", "gamma": multiplier}
        )
    elif kind == "cosine":
        out = {"type": "cosine"}
    elif kind == "polynomial":
        out = {"type": "polynomial", "power": float(opt.get("LearningRatePower", "1") or 1)}
    elif kind == "step" or kind == "multistep":
        steps = [int(s) for s in (opt.get("LearningRateSteps") or "").split(",") if s.strip().isdigit()]
        out = {"type": "step", "gamma": multiplier, "milestones": steps}
    if out is not None and warmup_epochs:
        out["warmup_epochs"] = warmup_epochs
    return out


def _search(ini: configparser.ConfigParser) -> dict[str, Any] | None:
    if not ini.has_section("StructureSearch"):
        return None
    s = ini["StructureSearch"]

    def limit(key: str) -> float | None:
        value = float(s.get(key, "-1") or -1)
        return None if value < 0 else value

    out: dict[str, Any] = {
        "method": "random" if s.get("Method", "Random").lower() == "random" else "bayes",
        "objective": "error" if s.get("Objective", "") == "Error" else "error_and_madds",
    }
    for key, ours, cast in (
        ("Validation_Min", "error_min", float),
        ("Validation_Max", "error_max", float),
        ("CostMultiplyAdd_Min", "multiply_adds_min", int),
        ("CostMultiplyAdd_Max", "multiply_adds_max", int),
    ):
        value = limit(key)
        if value is not None:
            out[ours] = cast(value)
    minutes = float(s.get("TimeLimit", "0") or 0)
    if minutes > 0:
        out["time_limit_minutes"] = minutes
    return out


def import_sdcproj(path: str | Path, dataset_root: str | Path | None = None, text: str | None = None) -> ImportResult:
    """Read an NNC project into our project mapping and network spec (nothing written). With
    ``text`` (an upload), ``path`` only names it in messages."""
    path = Path(path)
    try:
        return _import(path, dataset_root, text)
    except SdcprojError as exc:
        if str(exc).startswith(str(path)):
            raise
        msg = f"{path}: {exc}"
        raise SdcprojError(msg) from exc


def _import(path: Path, dataset_root: str | Path | None, text: str | None) -> ImportResult:
    ini = read_ini(path, text)
    notes: list[str] = []
    networks = read_networks(ini, path)
    name = trained_network(ini, networks)
    built = ProjectGraph(networks, notes).build(name)
    try:
        nested = nested_layers(built.nodes, built.input_node, built.output_node)
    except GraphError as exc:
        raise SdcprojError(str(exc)) from exc
    if not nested.layers:
        msg = f"network {name!r} has no layers between its Input and its loss"
        raise SdcprojError(msg)
    task = _task(built, nested.layers, notes)
    network = {
        "name": path.stem,
        "description": f"imported from {path.name} (network {name})",
        "input": Values(built.input_layer, {}, None).ints("Size"),
        "layers": nested.layers,
    }
    datasets = {}
    for k in range(int(ini["Dataset"].get("Num", "0")) if ini.has_section("Dataset") else 0):
        if ini.has_section(f"Dataset_{k}"):
            sec = ini[f"Dataset_{k}"]
            datasets[sec.get("Name", f"Dataset_{k}")] = sec
    training, validation = _dataset_names(ini)
    if training not in datasets:
        found = ", ".join(datasets) or "none"
        msg = f"the optimizer trains on dataset {training!r}, which no [Dataset_i] is named (found {found})"
        raise SdcprojError(msg)
    root = Path(dataset_root) if dataset_root else None
    dataset: dict[str, Any] = {
        "training": dataset_path(datasets[training].get("URI", ""), path, root),
        "input": built.input_layer.raw("Dataset") or "x",
        "target": (built.loss.layer.raw("T.Dataset") or None) if task != "autoencoder" else "y",
        "normalize": datasets[training].get("ImageNormalization", "1") == "1",
    }
    if validation in datasets and validation != training:
        dataset["validation"] = dataset_path(datasets[validation].get("URI", ""), path, root)
    project: dict[str, Any] = {"network": {"spec": "network.yaml"}, "task": task, "dataset": dataset}
    if built.side_outputs and task == "autoencoder":
        score_name, reduce = built.side_outputs[0]
        project["score"] = {"name": score_name, "reduce": reduce}
    project["config"] = _config(ini, notes, path)
    search = _search(ini)
    if search:
        project["search"] = search
    return ImportResult(project, network, task, notes)


def write_import(result: ImportResult, out_dir: str | Path) -> tuple[Path, Path]:
    """``out_dir/project.yaml`` and ``out_dir/network.yaml``, checked before they are written."""
    from appliance.project import parse_project
    from models.spec import SpecError, build

    out = Path(out_dir)
    try:
        build(result.network)
    except SpecError as exc:
        msg = f"the imported network does not build: {exc}"
        raise SdcprojError(msg) from exc
    project = copy.deepcopy(result.project)
    for key in ("training", "validation"):  # relative to the project file, so the folder can move with its data
        if key in project["dataset"]:
            project["dataset"][key] = os.path.relpath(project["dataset"][key], out.resolve())
    parse_project(project, "imported project", out)
    out.mkdir(parents=True, exist_ok=True)
    network_file, project_file = out / "network.yaml", out / "project.yaml"
    network_file.write_text(yaml.safe_dump(result.network, sort_keys=False), encoding="utf-8")
    project_file.write_text(yaml.safe_dump(project, sort_keys=False), encoding="utf-8")
    return project_file, network_file
