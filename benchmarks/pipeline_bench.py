"""Pipeline throughput and latency on this machine, end to end: synth:line 128×128 grey frames →
queue → detector (onnxruntime) → SQLite → outbox → MQTT (a private Mosquitto when installed,
else the embedded broker).

    python benchmarks/pipeline_bench.py [--seconds 20] [--defect-rate 0.05] [--readers 20] [--only LABEL]
                                        [--models DIR] [--database-url postgresql://user@host/db]

Reports, for a free-running source (as fast as the pipeline takes frames) and for paced ones
at 50 and 100 frames/s: sustained frames/s, dropped frames, and latency p50/p99 capture →
decision and capture → alert published (broker PUBACK). Goal (issue 5): ≥ 100 frames/s
sustained with p99 ≤ 100 ms, nothing dropped at 50 frames/s.

The API runs add ``--readers`` concurrent API clients reading ``/inspections`` and ``/alerts``
(a page of 50 each, in a loop, as consoles do) while the line runs at 100 frames/s, and report
their latency p50/p99 per route. The readers run in a process of their own, as consoles and
dashboards do (threads in this process would share its interpreter lock with the line).
Goal (issue 14, item 11): 20 readers → 0 frames dropped, API p99 ≤ 300 ms.

Shadow mode (issue 18): the file runs again at 50 and 100 frames/s with a shadow model of the
same architecture beside the line's: the throughput, latency and CPU goals must still hold
(``shadow``: the inspector's CPU for the shadow's inference and its stored results).

SQLite in each run's data folder by default; ``--database-url`` names a PostgreSQL server (the
database in it is the one to connect to for administration): each run gets a new database there,
dropped after it.

Steady-state CPU (issue 16): a recording of the line (MJPG, 128 px) replayed as a camera delivers
it (``file:…?fps=F&loop=1``) at 25, 50 and 100 frames/s; process CPU seconds per frame, split
by thread (source = decoding, inspector, alerts = MQTT sender and client, API, loops = status,
retention, jobs, spool; pool = onnxruntime's threads) and the inspector's own stages
(preprocess, inference, scoring, image writes, storage; the rest is bookkeeping). Goal: ≤ 8 ms
of CPU a frame. The synthetic line's own cost is measured alone.

Start-up: for the synthetic runs with a trained model, the capture → decision of the first 40
frames after the start (the line should not wait for what start-up still does).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.runtime import Appliance  # noqa: E402
from appliance.settings import load_settings  # noqa: E402
from benchmarks.broker import private_mosquitto  # noqa: E402


def paced_fps(source: str) -> float:
    from urllib.parse import parse_qs, urlsplit

    return float(parse_qs(urlsplit(source).query).get("fps", ["0"])[0])


def read_api(url: str, token: str, stop: threading.Event, latencies: dict[str, list[float]]) -> None:
    """One console-like reader: a page of inspections, a page of alerts, again, until ``stop``."""
    import httpx

    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
        while not stop.is_set():
            for route in ("/inspections", "/alerts"):
                start = time.perf_counter()
                client.get(route, params={"limit": 50}).raise_for_status()
                latencies[route].append((time.perf_counter() - start) * 1000)


def readers_process(url: str, token: str, readers: int, seconds: float) -> None:
    """``--reader-process``: ``readers`` threads reading for ``seconds``; prints their latencies as JSON."""
    import json

    latencies: dict[str, list[float]] = {"/inspections": [], "/alerts": []}
    stop = threading.Event()
    threads = [threading.Thread(target=read_api, args=(url, token, stop, latencies)) for _ in range(readers)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(30)
    print(json.dumps(latencies))


GROUPS = (
    ("source", ("source-", "video-")),
    ("inspector", ("inspector",)),
    ("alerts", ("alert-publisher", "paho-")),
    ("API", ("api", "AnyIO", "asyncio", "ThreadPoolExecutor")),
    ("loops", ("source-states", "retention", "history", "memory", "recipes", "jobs", "spool", "report", "teach")),
)


def thread_cpu() -> dict[int, tuple[str, float]]:
    """CPU seconds of each of this process's threads (Linux: /proc/self/task) with its group;
    threads Python did not start (onnxruntime's pool) are "pool"."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = names.get(int(tid), "")
        group = next((g for g, prefixes in GROUPS if name.startswith(prefixes)), "pool" if not name else "other")
        out[int(tid)] = (group, (int(fields[11]) + int(fields[12])) / tick)
    return out


def thread_cpu_since(before: dict[int, tuple[str, float]]) -> dict[str, float]:
    """CPU seconds per group since ``before``, thread by thread: a thread that ended meanwhile (a
    previous run's pool winding down) is left out, not subtracted."""
    out: dict[str, float] = {}
    for tid, (group, seconds) in thread_cpu().items():
        out[group] = out.get(group, 0.0) + seconds - before.get(tid, (group, 0.0))[1]
    return out


def shadow_twin(app: Appliance, version: str, sid: str) -> str:
    """The line's model again under another version, put in shadow on ``sid``: what a candidate of
    the same architecture costs the line."""
    from models import bundle as bundle_io

    path = next(app.models_dir.glob("*.zip"))
    twin = bundle_io.load(path)
    twin.meta["version"] = f"{version}-shadow"
    twin_path = app.models_dir / f"shadow-{path.name}"
    twin.save(twin_path)
    shadow_version = app.register(twin_path)
    app.start_shadow(shadow_version, sid, "pipeline_bench", "the cost of a shadow model")
    return shadow_version


@contextlib.contextmanager
def run_database(server: str | None) -> Iterator[str | None]:
    """None (SQLite in the run's data folder), or the URL of a new PostgreSQL database on
    ``server``, dropped afterwards."""
    if server is None:
        yield None
        return
    from tests.helpers.database import postgres_database

    with postgres_database("pipeline_bench", server) as url:
        yield url


def measure(
    data: Path,
    model_dir: Path | None,
    source: str,
    seconds: float,
    mqtt: dict,
    readers: int = 0,
    shadow: bool = False,
    database_url: str | None = None,
) -> dict:
    settings = load_settings(
        data_dir=data,
        sources=[source],
        api_port=0,
        mqtt=mqtt,
        queue_size=64,
        **({"database_url": database_url} if database_url else {}),
    )  # the default detector, trained once on first start
    app = Appliance(settings, log=lambda line: None)
    app.models_dir.mkdir(parents=True, exist_ok=True)
    versions = []
    if model_dir is not None:  # the model of the first run, activated: no training again
        for f in model_dir.glob("*.zip"):
            shutil.copy(f, app.models_dir / f.name)
            app.activate(app.models_dir / f.name)
            versions.append(app.register(app.models_dir / f.name))
    app.start()
    if not source.startswith("synth:"):  # the first-start model judges synthetic sources only: bind it
        sid = next(iter(app.pipeline.status()))
        app.promote(versions[-1], "pipeline_bench", "the line's model for the recording", sid)
    if shadow:
        sid = next(iter(app.pipeline.status()))
        shadow_twin(app, app.recipes.get(sid).version, sid)
    time.sleep(3)  # warm-up
    first = first_frames(app) if source.startswith("synth:") and model_dir is not None else None
    token = (data / "admin-token").read_text().strip()
    url = f"http://127.0.0.1:{app.api_port}"
    reader, reader_cpu = None, 0.0
    if readers:
        command = [sys.executable, __file__, "--reader-process", url, token, str(readers), str(seconds)]
        reader = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    sid = next(iter(app.pipeline.status()))
    st0, threads0, stages0, cpu0 = app.pipeline.status()[sid], thread_cpu(), dict(app.pipeline.cpu), time.process_time()
    start = time.monotonic()
    time.sleep(seconds)
    st, threads, stages, cpu = (
        app.pipeline.status()[sid],
        thread_cpu_since(threads0),
        dict(app.pipeline.cpu),
        time.process_time(),
    )
    elapsed = time.monotonic() - start
    frames = max(1, st["scored"] - st0["scored"])
    latencies: dict[str, list[float]] = {"/inspections": [], "/alerts": []}
    if reader is not None:
        import json

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        latencies = json.loads(reader.communicate(timeout=120)[0])
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        reader_cpu = sum(getattr(children_after, f) - getattr(children, f) for f in ("ru_utime", "ru_stime"))
    app.stop()
    return {
        "fps": (st["scored"] - st0["scored"]) / elapsed,
        "dropped": st["queue_dropped"] + st["frames_dropped"] - st0["queue_dropped"] - st0["frames_dropped"],
        "decision": st["capture_to_decision_ms"],
        "published": st["capture_to_alert_published_ms"],
        "alerts": st["decisions"]["ng"] + st["decisions"]["review"],
        # a paced source that falls behind its rate loses frames a camera would have dropped
        "behind": max(0, round(paced_fps(source) * elapsed - (st["frames_in"] - st0["frames_in"])))
        if source.startswith("synth:") and paced_fps(source)
        else 0,
        "models": app.models_dir,
        "first": first,
        "api": {route: np.percentile(v, [50, 99]).tolist() if v else None for route, v in latencies.items()},
        "api_requests": sum(len(v) for v in latencies.values()),
        "reader_cores": reader_cpu / elapsed,
        "frames": frames,
        "cpu_ms": (cpu - cpu0) * 1000 / frames,
        "threads_ms": {k: v * 1000 / frames for k, v in threads.items()},
        "stages_ms": {k: (v - stages0.get(k, 0)) * 1000 / frames for k, v in stages.items()},
    }


def first_frames(app: Appliance, n: int = 40) -> list[float]:
    """Capture → decision (ms) of the first ``n`` frames stored after the start: what start-up
    work still running when the source began capturing costs the line."""
    from sqlmodel import select

    from appliance.storage import queries
    from appliance.storage.models import Inspection

    query = select(Inspection.t_capture, Inspection.t_decided).order_by(Inspection.id).limit(n)
    rows = queries.read_rows(app.engine, query)
    return [(decided - captured).total_seconds() * 1000 for captured, decided in rows]


def record_line(path: Path, defect_rate: float, frames: int = 400) -> Path:
    """The synthetic line as a camera recording (MJPG), replayed by ``file:…?fps=``."""
    from connectors.synthetic import SyntheticLine

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (128, 128), False)
    for part in SyntheticLine(128, defect_rate=defect_rate, seed=7).take(frames):
        writer.write(part.image)
    writer.release()
    return path


def synthetic_cost(frames: int = 300) -> float:
    from connectors.synthetic import SyntheticLine

    line = SyntheticLine(128, defect_rate=0.05, seed=1)
    line.next()
    start = time.thread_time()
    for _ in range(frames):
        line.next()
    return (time.thread_time() - start) * 1000 / frames


def print_cpu(rows: list[tuple[str, dict]]) -> None:
    groups = ("source", "inspector", "pool", "alerts", "API", "loops", "other")
    stages = ("preprocess", "inference", "scoring", "image_writes", "storage", "drift", "shadow")
    print("CPU ms a frame   total  " + "  ".join(f"{g:>9}" for g in groups) + "  | inspector: " + " ".join(stages))
    for label, r in rows:
        t, st = r["threads_ms"], r["stages_ms"]
        by_thread = "  ".join(f"{t.get(g, 0):9.2f}" for g in groups)
        by_stage = " ".join(f"{st.get(k, 0):.2f}" for k in stages)
        print(f"{label:>14}  {r['cpu_ms']:6.2f}  {by_thread}  | {by_stage}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--defect-rate", type=float, default=0.05)
    parser.add_argument("--readers", type=int, default=20, help="concurrent API readers in the last run")
    parser.add_argument("--only", default="", help="run only the runs whose label holds this (e.g. 'file')")
    parser.add_argument(
        "--models",
        type=Path,
        help="a folder for the first run's model: kept there, and used (no training) when it holds one",
    )
    parser.add_argument("--database-url", help="a PostgreSQL server to make each run's database on (default: SQLite)")
    parser.add_argument("--reader-process", nargs=4, metavar=("URL", "TOKEN", "N", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader_process:
        url, token, n, seconds = args.reader_process
        readers_process(url, token, int(n), float(seconds))
        return
    with private_mosquitto() as mqtt:
        with tempfile.TemporaryDirectory() as tmp:
            models = args.models if args.models and any(args.models.glob("*.zip")) else None
            recording = record_line(Path(tmp) / "line.avi", args.defect_rate)
            runs = [
                ("free-running", f"synth:line?size=128&defect_rate={args.defect_rate}&seed=1"),
                ("paced 50/s", f"synth:line?size=128&fps=50&defect_rate={args.defect_rate}&seed=2"),
                ("paced 100/s", f"synth:line?size=128&fps=100&defect_rate={args.defect_rate}&seed=3"),
                (f"100/s+{args.readers} API", f"synth:line?size=128&fps=100&defect_rate={args.defect_rate}&seed=4"),
                *((f"file {fps}/s", f"file:{recording}?fps={fps}&loop=1") for fps in (25, 50, 100)),
                (f"file 100/s+{args.readers} API", f"file:{recording}?fps=100&loop=1"),
                *((f"file {fps}/s+shadow", f"file:{recording}?fps={fps}&loop=1") for fps in (50, 100)),
            ]
            cpu_rows = []
            for label, source in runs:
                if args.only not in label and models is not None:
                    continue  # (the first run trains the model the others use)
                readers = args.readers if "API" in label else 0
                folder = Path(tmp) / label.replace(" ", "-").replace("/", "").replace("+", "-")
                with run_database(args.database_url) as url:
                    r = measure(folder, models, source, args.seconds, mqtt, readers, "shadow" in label, url)
                if models is None:  # the first run's model, trained on first start (a shadow run adds its twin)
                    models = r["models"]
                    if args.models:
                        args.models.mkdir(parents=True, exist_ok=True)
                        for f in models.glob("*.zip"):
                            shutil.copy(f, args.models / f.name)
                d, p = r["decision"], r["published"]
                print(
                    f"{label:>13}: {r['fps']:6.1f} frames/s, dropped {r['dropped']}, behind {r['behind']}, "
                    f"alerts {r['alerts']}; "
                    f"capture→decision p50 {d['p50']:.1f} ms p99 {d['p99']:.1f} ms; "
                    f"capture→alert published p50 {p['p50']:.1f} ms p99 {p['p99']:.1f} ms"
                )
                if r["first"]:
                    first = r["first"]
                    print(
                        f"{'':>13}  the first {len(first)} frames after the start: capture→decision "
                        f"max {max(first):.0f} ms, mean {np.mean(first):.0f} ms"
                    )
                if readers:
                    for route, q in r["api"].items():
                        print(f"{'':>13}  {route}: p50 {q[0]:.0f} ms p99 {q[1]:.0f} ms")
                    print(f"{'':>13}  {r['api_requests']} API requests from {readers} readers in {args.seconds:g} s")
                    api_cpu = r["threads_ms"].get("API", 0.0) * r["frames"] / max(1, r["api_requests"])
                    inspector = r["threads_ms"].get("inspector", 0.0)
                    print(
                        f"{'':>13}  CPU: {r['cpu_ms']:.2f} ms a frame, inspector {inspector:.2f}; "
                        f"the API thread {api_cpu:.2f} ms a request; the readers' process "
                        f"{r['reader_cores']:.2f} of this machine's {os.cpu_count()} cores"
                    )
                if source.startswith("file:") and not readers:
                    cpu_rows.append((label, r))
            print_cpu(cpu_rows)
    print(f"the synthetic line alone: {synthetic_cost():.2f} ms of CPU a 128 px frame")
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB (this process)")
    print(
        f"database: {'PostgreSQL' if args.database_url else 'SQLite'}; "
        f"broker: {'mosquitto' if mqtt else 'embedded amqtt'}; goal: >= 100 frames/s with p99 <= 100 ms, "
        f"nothing dropped at 50 frames/s; with {args.readers} API readers at 100 frames/s: 0 dropped, API p99 <= 300 ms"
    )


if __name__ == "__main__":
    main()
