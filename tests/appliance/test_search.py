"""``appliance search`` from the CLI on ten-class digits, from the binary-CNN base network."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.cli import main

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: object) -> int:
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("search")
    assert cli("dataset", "sample", "digits", base / "digits") == 0
    path = base / "project.yaml"
    path.write_text(
        "network: {zoo: binary_cnn}\n"
        "dataset: {training: digits/training.csv, validation: digits/validation.csv}\n"
        "config: {max_epoch: 4, batch_size: 64, solver: {type: Adam, lr: 0.001}}\n"
        # one worker: proposals in a fixed order; six trials, so the last two come from the Gaussian
        # process (it proposes once four trials are usable), at about 40 % of eight trials of six epochs
        "search: {max_trials: 6, workers: 1, method: bayes}\n"
    )
    return path


def read_table(run: Path) -> list[dict[str, str]]:
    with (run / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def test_search_finds_a_better_network_than_the_base(tmp_path, project, capsys):
    run = tmp_path / "search"
    assert cli("search", project, "-o", run) == 0  # the project's search section: bayes, 6 trials, 1 worker
    out = capsys.readouterr().out
    assert "Pareto front" in out and "stopped by trial budget" in out
    rows = read_table(run)
    assert len(rows) == 6 and [int(r["trial"]) for r in rows] == list(range(6))
    base = rows[0]
    assert base["mutations"] == "" and base["status"] == "done"
    assert int(base["multiply_adds"]) == 436_580  # binary_cnn on 28×28 with ten outputs, as `network stats` says
    done = [r for r in rows if r["status"] == "done"]
    # six trials of four epochs find a better network; whether one is also lighter depends on the
    # machine's last bits of floating point (the errors steer the proposals), so that is not asserted
    winners = [r for r in done if float(r["error"]) < 0.8 * float(base["error"])]
    assert winners, rows
    # NNC's marking: nothing on the front is beaten on both axes by another finished trial
    front = [r for r in rows if r["pareto"] == "True"]
    lightest = min(done, key=lambda r: (int(r["multiply_adds"]), float(r["error"])))
    assert len(front) >= 2 and lightest in front  # the front runs from the lightest trial to the best
    for r in front:
        assert not any(
            float(o["error"]) <= float(r["error"])
            and int(o["multiply_adds"]) <= int(r["multiply_adds"])
            and (float(o["error"]) < float(r["error"]) or int(o["multiply_adds"]) < int(r["multiply_adds"]))
            for o in done
        )
    for r in rows[1:]:
        assert r["mutations"] and json.loads(r["spec"])
        assert (run / "trials" / f"{int(r['trial']):04d}" / "network.yaml").is_file()
    assert (run / "tradeoff.png").stat().st_size > 10_000
    # export the best winner; evaluating the bundle gives back the trial's validation error
    best = min(winners, key=lambda r: float(r["error"]))
    bundle = tmp_path / "winner.zip"
    assert cli("search-export", run, best["trial"], bundle) == 0
    assert (
        cli("evaluate", bundle, "--dataset", project.parent / "digits" / "validation.csv", "-o", tmp_path / "ev") == 0
    )
    report = json.loads((tmp_path / "ev" / "evaluation.json").read_text())
    assert report["accuracy"] == pytest.approx(1 - float(best["error"]), abs=1e-6)
    # a trial's own project trains it again with `appliance train`
    trial_project = run / "trials" / f"{int(best['trial']):04d}" / "project.yaml"
    assert "network.yaml" in trial_project.read_text()


def test_an_interrupted_search_resumes_without_retraining_finished_trials(tmp_path, project):
    run = tmp_path / "resumed"
    args = [sys.executable, "-m", "appliance.cli", "search", str(project), "-o", str(run), "--method", "bayes"]
    args += ["--trials", "5", "--epochs", "1"]  # the mechanics of resuming, not the quality
    proc = subprocess.Popen(args, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while len(list(run.glob("trials/*/trial.json"))) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        proc.kill()  # kill -9 of the search alone: its trial workers must not outlive it
        proc.wait()
    deadline = time.monotonic() + 20
    while subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "trial workers outlived the killed search"
        time.sleep(0.2)
    kept = {p: (p.stat().st_mtime_ns, p.read_text()) for p in run.glob("trials/*/trial.json")}
    assert len(kept) >= 3
    assert cli("search", project, "-o", run, "--resume", "--method", "bayes", "--trials", "5", "--epochs", "1") == 0
    rows = read_table(run)
    assert [int(r["trial"]) for r in rows] == list(range(5))
    for path, (mtime, text) in kept.items():  # finished trials were not trained again
        assert path.stat().st_mtime_ns == mtime and path.read_text() == text
    assert f"resuming: {len(kept)} finished trials kept" in (run / "search.log").read_text()
    # the specs are all different networks
    assert len({r["key"] for r in rows}) == 5


def test_wrong_use_is_named(tmp_path, project, capsys):
    assert cli("search", project, "-o", tmp_path / "nothing", "--resume") == 2
    assert "nothing to resume" in capsys.readouterr().err
    no_valid = project.parent / "novalid.yaml"
    no_valid.write_text("network: {zoo: binary_cnn}\ndataset: {training: digits/training.csv}\n")
    assert cli("search", no_valid, "-o", tmp_path / "x") == 2
    assert "needs a validation dataset" in capsys.readouterr().err
    bad = project.parent / "badkey.yaml"
    bad.write_text(project.read_text().replace("max_trials: 6", "max_trails: 6"))
    assert cli("search", bad, "-o", tmp_path / "y") == 2
    assert "unknown key 'search.max_trails'" in capsys.readouterr().err
    assert cli("search-export", tmp_path, 3, tmp_path / "m.zip") == 2
    assert "no finished trial 3" in capsys.readouterr().err


def test_time_limit_stops_the_search_and_resume_finishes_it(tmp_path, project, capsys):
    run = tmp_path / "timed"
    assert cli("search", project, "-o", run, "--time-limit", "0.01", "--trials", "3", "--epochs", "1") == 0
    assert "stopped by time limit" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # same folder without --resume is refused, nothing overwritten
        raise SystemExit(cli("search", project, "-o", run, "--trials", "3", "--epochs", "1"))
    assert "pass --resume" in capsys.readouterr().err
    assert cli("search", project, "-o", run, "--resume", "--trials", "3", "--epochs", "1") == 0
    assert len(read_table(run)) == 3
    assert cli("search", project, "-o", run, "--resume", "--trials", "3", "--epochs", "5") == 2
    assert "its epochs is 1" in capsys.readouterr().err


def test_trials_on_a_dask_cluster_give_the_process_pools_table(tmp_path, project):
    """``--executor dask://…``: the same trials, in the same order, with the same results as the
    local process pool for the same seed (one trial at a time: proposals depend on the order)."""
    from distributed import LocalCluster

    args = ("--trials", 2, "--epochs", 1, "--seed", 3, "--workers", 1, "--quiet")
    assert cli("search", project, "-o", tmp_path / "local", *args) == 0
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        address = cluster.scheduler_address.replace("tcp://", "dask://")
        assert cli("search", project, "-o", tmp_path / "dask", "--executor", address, *args) == 0
    keys = ("trial", "status", "error", "multiply_adds", "parameters", "parent", "mutations", "key")
    local, dask = read_table(tmp_path / "local"), read_table(tmp_path / "dask")
    assert len(local) == 2
    assert [{k: r[k] for k in keys} for r in dask] == [{k: r[k] for k in keys} for r in local]


def test_an_unreachable_dask_scheduler_is_named(tmp_path, project, capsys):
    assert cli("search", project, "-o", tmp_path / "x", "--executor", "dask://127.0.0.1:1", "--trials", 2) != 0
    assert "no Dask scheduler answers at tcp://127.0.0.1:1" in capsys.readouterr().err
