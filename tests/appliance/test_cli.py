"""The ``appliance`` command as a user types it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def appliance(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "appliance.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        check=False,
        timeout=300,
    )


def test_network_stats_of_the_seeds_binary_cnn(tmp_path):
    out = appliance(
        "network",
        "stats",
        "binary_cnn",
        "--batch-size",
        "64",
        "--json",
        str(tmp_path / "s.json"),
        "--chart",
        str(tmp_path / "s.png"),
    )
    assert out.returncode == 0, out.stderr
    assert "4,925" in out.stdout and "436,490" in out.stdout  # totals: parameters, multiply-adds
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["total"]["parameters"] == 4925 and data["layers"][0]["output_shape"] == [16, 24, 24]
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_network_stats_of_a_spec_file_and_its_errors(tmp_path):
    spec = tmp_path / "net.yaml"
    spec.write_text(
        "input: [3, 16]\nlayers:\n  - {type: Convolution, outmaps: 4, kernel: 3}\n  - {type: Affine, n_outmaps: 2}\n"
    )
    out = appliance("network", "stats", str(spec))
    assert out.returncode == 0 and "4x14" in out.stdout
    spec.write_text("input: [3, 16]\nlayers:\n  - {type: Convolution, outmaps: 4, kernel: 30}\n")
    bad = appliance("network", "stats", str(spec))
    assert bad.returncode == 2 and "layers[0] (Convolution): kernel (30,) does not fit input (16,)" in bad.stderr
    assert appliance("network", "stats", str(tmp_path / "missing.yaml")).returncode == 2


def test_version():
    out = appliance("--version")
    assert out.returncode == 0 and out.stdout.startswith("appliance ")


def test_settings_mistakes_end_in_one_line_naming_the_key(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("APPLIANCE_")}
    cases = [
        ({"APPLIANCE_API_PORTT": "1"}, [], "unknown setting 'api_portt' (environment variable APPLIANCE_API_PORTT)"),
        ({"APPLIANCE_MQTT__PORTX": "1"}, [], "unknown setting 'mqtt.portx'"),
        ({}, ["--config", str(tmp_path / "missing.yaml")], "settings file"),
        (  # nothing listens on port 1: named without its password
            {"APPLIANCE_DATABASE_URL": "postgresql://line:s3cret@127.0.0.1:1/line"},
            [],
            "database_url: cannot reach postgresql+psycopg://line:***@127.0.0.1:1/line: connection failed",
        ),
    ]
    (tmp_path / "typo.yaml").write_text("api_portt: 1\n")
    cases.append(({}, ["--config", str(tmp_path / "typo.yaml")], "unknown setting 'api_portt'"))
    started = [  # side by side: each is a cold start of the CLI
        subprocess.Popen(
            [sys.executable, "-m", "appliance.cli", "run", *args, "--duration", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**env, **extra},
        )
        for extra, args, _ in cases
    ]
    for (extra, args, message), proc in zip(cases, started, strict=True):
        err = proc.communicate(timeout=120)[1]
        assert proc.returncode == 2 and message in err, (extra, args, err[-500:])
        assert len(err.strip().splitlines()) == 1, err
