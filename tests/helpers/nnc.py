"""Neural Network Console and nnabla for the tests: nnabla's own interpreter, and NNC projects
written the way NNC writes them (for forms the shipped tutorials do not cover)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SIDE = Path(__file__).with_name("nnabla_side.py")
TUTORIALS = ROOT / "tests" / "data" / "nnc"


def nnabla_python() -> Path:
    """``.venv-nnabla``'s interpreter (``make nnabla-venv``); skips without it, fails under CI."""
    python = ROOT / ".venv-nnabla" / "bin" / "python"
    if python.is_file():
        return python
    why = "nnabla's venv is missing: `make nnabla-venv` needs a CPython 3.10 (see README)"
    if os.environ.get("NNABLA_REQUIRED"):
        pytest.fail(why)
    pytest.skip(why)


def nnabla(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``nnabla_side.py`` (make / forward) under nnabla's interpreter; fails with its stderr."""
    done = subprocess.run(
        [str(nnabla_python()), str(SIDE), *map(str, args)], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def nnabla_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """nnabla's own command line (``nnabla_cli forward -c … -d … -o …``)."""
    cli = nnabla_python().with_name("nnabla_cli")
    done = subprocess.run([str(cli), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def layer(layer_id: int, kind: str, **props: str) -> tuple[int, str, dict[str, str]]:
    return layer_id, kind, {"Name": props.pop("Name", f"{kind}_{layer_id}"), **props}


def write_sdcproj(
    path: Path,
    networks: dict[str, tuple[list[tuple[int, str, dict[str, str]]], list[tuple[int, int]]]],
    training: str = "training.csv",
    validation: str = "validation.csv",
    config: str = "MaxEpoch=2\nBatchSize=16\n",
) -> Path:
    """An ``.sdcproj`` as NNC writes one: ``networks`` maps a name to (layers, links (source id,
    destination id)); one network gives the single-network form (``[Network_Global]``), several the
    ``[Global]`` form with every section prefixed by its network's name. The first network trains."""
    lines = ["[Engine]", "SDeepEngineType=NNabla"]
    several = len(networks) > 1
    if several:
        lines += ["[Global]", f"NumNetwork={len(networks)}"] + [f"Network_{k}={n}" for k, n in enumerate(networks)]
    for name, (layers, links) in networks.items():
        prefix = f"{name}_" if several else ""
        lines += [f"[{prefix}Network_Global]", f"NumLayer={len(layers)}", f"NumLink={len(links)}"]
        for i, (layer_id, kind, props) in enumerate(layers):
            lines += [f"[{prefix}Layer_{i}]", f"ID={layer_id}", f"Type={kind}"]
            for j, (key, value) in enumerate(props.items()):
                lines += [f"Property_{j}_Name={key}", f"Property_{j}_Value={value}"]
            lines.append(f"NumProperty={len(props)}")
        for i, link in enumerate(links):
            src, dst, pin = (*link, 0) if len(link) == 2 else link
            lines += [f"[{prefix}Link_{i}]", f"ID={i}", f"SourceLayerID={src}", "SourcePinIndex=0"]
            lines += [f"DestLayerID={dst}", f"DestPinIndex={pin}"]
    first = next(iter(networks))
    lines += ["[Dataset]", "Num=2", "MainIndex=0"]
    for k, (kind, uri) in enumerate((("Training", training), ("Validation", validation))):
        lines += [
            f"[Dataset_{k}]",
            f"Name={kind}",
            f"URI={{SDCPATH}}{uri}",
            f"Shuffle={int(k == 0)}",
            "ImageNormalization=1",
        ]
    lines += ["[Config]", *config.strip().splitlines(), "NumOptimizer=1", "[Optimizer_0]"]
    lines += [f"Optimizer_NetworkName={first}", "Optimizer_DatasetName=Training", "SolverName=Adam"]
    lines += ["SolverParameterNum=1", "SolverParameterName_0=Alpha", "SolverParameter_0=0.01"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
