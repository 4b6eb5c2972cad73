"""Does the appliance hold steady for months? A soak run of the real ``appliance run`` process.

    python benchmarks/soak_bench.py [--minutes 30] [--fps 50] [--defect-rate 0.05] [--readers 2]
                                    [--database-url postgresql+psycopg://…] [--data DIR]
                                    [--bursts EVERY:LENGTH[:HOGS]] [--trace-memory MINUTES]

Starts ``appliance run`` as a plant would (its own process, settings from a file: a synthetic
line at ``--fps``, SQLite in the data folder or ``--database-url``, a private Mosquitto), with
``--readers`` console-like API clients (a page of inspections, alerts and the sources' status,
once a second each) and a real MQTT subscriber on the alerts topic (``mosquitto_sub``). The first
start trains the default detector; the clock starts once the line is inspecting. Every
``--sample`` seconds it records, from ``/proc`` and the data folder: resident memory, open file
descriptors, threads, CPU, the database's and the image store's size and the frames scored.

Prints the samples, then what must not grow on a line that runs for months: the resident
memory's slope over the second half of the run (MB per hour, least squares; the first half is
warm-up: caches, the drift reference, the metrics' windows filling), descriptors and threads at
the start and end of that half, disk per million frames, and every alert the broker delivered
against the alerts the appliance stored. Goals: memory slope within noise (≤ 5 MB/hour),
descriptors and threads flat, no alert missing.

``--bursts 10:3`` loads the machine the same way again and again: every 10 minutes, for 3, busy
processes (four per core unless ``:HOGS`` says how many) compete with the appliance for the CPU, as
other work on a shared box does (the frames scored column shows whether the line kept up). It
prints each burst's highest resident memory and the memory before the next one: bounded memory
stops rising after the first bursts, a leak steps up with every one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402

from appliance.storage.db import make_engine  # noqa: E402
from benchmarks.broker import free_port, private_mosquitto  # noqa: E402

COLUMNS = (
    "minute",
    "frames scored",
    "RSS MB",
    "heap / anon / files MB",
    "descriptors",
    "threads",
    "CPU ms a frame",
    "database MB",
    "images MB",
)


def proc_stats(pid: int) -> dict[str, float]:
    """Resident memory (MB), its peak, open descriptors, threads and CPU seconds of ``pid``."""
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return {
        "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
        "peak_mb": int(status["VmHWM"].split()[0]) / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": int(status["Threads"]),
        "cpu_s": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK"),
    }


def memory_split(pid: int) -> dict[str, float]:
    """Resident MB of ``pid`` by mapping (``/proc/PID/smaps``): the main heap (glibc's brk arena),
    other anonymous memory (threads' malloc arenas, large blocks, native libraries' own
    allocators) and files (code, shared libraries, mapped databases). Where a growth lives."""
    split = {"heap_mb": 0.0, "anon_mb": 0.0, "files_mb": 0.0}
    kind = "anon_mb"
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header line
            name = fields[5] if len(fields) > 5 else ""
            kind = "heap_mb" if name == "[heap]" else "files_mb" if name.startswith("/") else "anon_mb"
        elif fields and fields[0] == "Rss:":
            split[kind] += int(fields[1]) / 1024
    return split


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def database_mb(data: Path, url: str | None) -> float:
    """The database's size on disk: SQLite's files in the data folder, or PostgreSQL's own count."""
    if not url:
        return sum(f.stat().st_size for f in data.glob("appliance.db*")) / 2**20
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(text("SELECT pg_database_size(current_database())")).scalar_one() / 2**20
    finally:
        engine.dispose()


def read_like_a_console(client: httpx.Client, stop: threading.Event, errors: list[str]) -> None:
    while not stop.is_set():
        for route, params in (("/inspections", {"limit": 50}), ("/alerts", {"limit": 50}), ("/sources", {})):
            try:
                client.get(route, params=params).raise_for_status()
            except httpx.HTTPError as exc:
                errors.append(f"{route}: {exc}")
        stop.wait(1.0)


def wait_inspecting(client: httpx.Client, process: subprocess.Popen, timeout: float, token_file: Path) -> str:
    """The source's id once a model judges it (the first start trains one). A data folder kept
    from a run on another database holds that database's admin token until the appliance writes
    its own: on 401 the token is read again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"appliance run ended with code {process.returncode} before the line inspected")
        try:  # until it answers: a starting appliance may say 401 (see above) or 503
            answer = client.get("/sources")
            if answer.status_code == 401:
                client.headers["Authorization"] = f"Bearer {token_file.read_text().strip()}"
            for source_id, row in answer.raise_for_status().json().items():
                if row.get("mode") == "inspecting" and row.get("scored", 0) > 0:
                    return source_id
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(2)
    sys.exit(f"the line was not inspecting after {timeout:.0f} s")


def alert_count(client: httpx.Client) -> int:
    return int(client.get("/alerts", params={"limit": 1}).json()["count"])


class Bursts:
    """Every ``every`` seconds, ``length`` seconds of ``hogs`` busy processes."""

    def __init__(self, spec: str) -> None:
        try:
            every, length, *hogs = spec.split(":")
            self.every, self.length = float(every) * 60, float(length) * 60
            self.count = int(hogs[0]) if hogs else 4 * (os.cpu_count() or 1)
        except ValueError:
            sys.exit(f"--bursts {spec}: expected EVERY:LENGTH[:HOGS], minutes and a count (e.g. 10:3 or 10:3:8)")
        if not 0 < self.length < self.every or self.count < 1:
            sys.exit(f"--bursts {spec}: the burst must be shorter than the time between bursts, with a busy process")
        self.hogs: list[subprocess.Popen] = []

    def burst_of(self, t: float) -> int | None:
        """The burst running at ``t`` seconds into the soak (1, 2, …), None between bursts."""
        k, into = divmod(t, self.every)
        return int(k) if k >= 1 and into < self.length else None

    def at(self, t: float) -> int | None:
        burst = self.burst_of(t)
        if burst and not self.hogs:
            command = [sys.executable, "-c", "while True: pass"]
            self.hogs = [subprocess.Popen(command) for _ in range(self.count)]
        elif not burst:
            self.stop()
        return burst

    def stop(self) -> None:
        for hog in self.hogs:
            hog.kill()
            hog.wait()
        self.hogs = []


def burst_table(samples: list[dict], bursts: Bursts) -> list[dict]:
    """Per burst: the highest resident memory during it and until the next, and the last sample
    before the next one starts (settled); a burst whose time until the next outlasted the run is
    left out."""
    rows = []
    for k in sorted({s["burst"] for s in samples if s["burst"]}):
        start = k * bursts.every
        if start + bursts.every > samples[-1]["t"] + bursts.every / 10:
            continue
        window = [s for s in samples if start <= s["t"] < start + bursts.every]
        rows.append(
            {
                "burst": k,
                "highest_mb": round(max(s["rss_mb"] for s in window), 1),
                "settled_mb": round(window[-1]["rss_mb"], 1),
            }
        )
    return rows


def slope_per_hour(t: np.ndarray, v: np.ndarray) -> float:
    return float(np.polyfit(t / 3600, v, 1)[0]) if len(t) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--fps", type=float, default=50)
    parser.add_argument("--defect-rate", type=float, default=0.05)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--sample", type=float, default=15, help="seconds between samples")
    parser.add_argument("--database-url", help="default: SQLite in the data folder")
    parser.add_argument("--data", type=Path, help="data folder (kept; a trained model in it is reused)")
    parser.add_argument("--bursts", help="EVERY:LENGTH[:HOGS] minutes: repeated load by HOGS busy processes")
    parser.add_argument(
        "--trace-memory",
        type=float,
        metavar="MINUTES",
        help="trace Python's allocations (benchmarks/traced_run.py; slower) and print SQLite's and malloc's own "
        "counts a minute apart, and the call sites whose "
        "live memory grew most between a snapshot MINUTES after the line started and the end",
    )
    args = parser.parse_args()
    bursts = Bursts(args.bursts) if args.bursts else None
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a kill stops the appliance and the busy processes too

    with tempfile.TemporaryDirectory() as tmp, private_mosquitto() as mqtt:
        data = args.data or Path(tmp) / "var"
        data.mkdir(parents=True, exist_ok=True)
        port = free_port()
        settings = {
            "data_dir": str(data),
            "sources": [f"synth:line?fps={args.fps:g}&defect_rate={args.defect_rate:g}"],
            "api_port": port,
            "mqtt": mqtt or {"embedded_port": 0},
        }
        if args.database_url:
            settings["database_url"] = args.database_url
        config = Path(tmp) / "settings.yaml"
        config.write_text(yaml.safe_dump(settings))
        command = [sys.executable, "-m", "appliance.cli", "run", "--config", str(config), "--report-every", "600"]
        trace = Path(tmp) / "trace"
        if args.trace_memory:
            wrapper = [sys.executable, str(ROOT / "benchmarks" / "traced_run.py"), "--out", str(trace)]
            command = [*wrapper, "--every", str(args.trace_memory * 60), "--", *command[3:]]
        log = (Path(tmp) / "appliance.log").open("w")
        process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        subscriber = None
        try:
            deadline = time.monotonic() + 60
            while not (data / "admin-token").is_file() and time.monotonic() < deadline:
                time.sleep(0.5)
            token = (data / "admin-token").read_text().strip()
            client = httpx.Client(
                base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {token}"}, timeout=30
            )
            print("waiting for the line to inspect (the first start trains the default detector) …", flush=True)
            source = wait_inspecting(client, process, 1800, data / "admin-token")
            if mqtt and shutil.which("mosquitto_sub"):
                topic = "appliance/+/+/+/alerts/#"  # the default prefix, any site, line and node
                subscriber = subprocess.Popen(
                    ["mosquitto_sub", "-h", mqtt["host"], "-p", str(mqtt["port"]), "-q", "1", "-t", topic, "-v"],
                    stdout=subprocess.PIPE,
                    text=True,
                )
            received: list[str] = []
            if subscriber is not None:
                threading.Thread(target=lambda: received.extend(subscriber.stdout), daemon=True).start()
            stop, errors = threading.Event(), []
            readers = [
                threading.Thread(target=read_like_a_console, args=(client, stop, errors), daemon=True)
                for _ in range(args.readers)
            ]
            for r in readers:
                r.start()
            alerts_before = alert_count(client)
            if args.trace_memory:
                (trace / "start").touch()
            samples = []
            start = time.monotonic()
            columns = (*COLUMNS, "burst") if bursts else COLUMNS
            print("| " + " | ".join(columns) + " |")
            print("|---" * len(columns) + "|")
            burst = None
            while time.monotonic() - start < args.minutes * 60:
                time.sleep(args.sample)
                burst = bursts.at(time.monotonic() - start) if bursts else None
                if process.poll() is not None:
                    sys.exit(f"appliance run ended with code {process.returncode} during the soak")
                frames = client.get("/sources").json()[source]["scored"]
                s = (
                    proc_stats(process.pid)
                    | memory_split(process.pid)
                    | {"t": time.monotonic() - start, "frames": frames, "burst": burst}
                )
                db = database_mb(data, args.database_url)
                s |= {"db_mb": db, "images_mb": folder_mb(data / "images")}
                per_frame = (
                    (s["cpu_s"] - samples[-1]["cpu_s"]) * 1000 / max(1, frames - samples[-1]["frames"])
                    if samples
                    else float("nan")
                )
                samples.append(s)
                print(
                    f"| {s['t'] / 60:.1f} | {frames:,} | {s['rss_mb']:.1f} "
                    f"| {s['heap_mb']:.0f} / {s['anon_mb']:.0f} / {s['files_mb']:.0f} | {s['fds']} | {s['threads']} "
                    f"| {per_frame:.2f} | {db:.1f} | {s['images_mb']:.1f} |" + (f" {burst or ''} |" if bursts else ""),
                    flush=True,
                )
            stop.set()
            if bursts:
                bursts.stop()
            time.sleep(3)  # the last alerts reach the subscriber
            half = samples[len(samples) // 2 :]
            t, rss = np.array([s["t"] for s in half]), np.array([s["rss_mb"] for s in half])
            frames = samples[-1]["frames"] - samples[0]["frames"]
            disk = (samples[-1]["db_mb"] + samples[-1]["images_mb"]) - (samples[0]["db_mb"] + samples[0]["images_mb"])
            summary = {
                "minutes": args.minutes,
                "fps": args.fps,
                "frames": frames,
                "rss_slope_mb_per_hour": round(slope_per_hour(t, rss), 2),
                "rss_second_half_mb": [round(float(rss.min()), 1), round(float(rss.max()), 1)],
                **{
                    f"{kind}_slope_mb_per_hour": round(slope_per_hour(t, np.array([s[f"{kind}_mb"] for s in half])), 2)
                    for kind in ("heap", "anon", "files")
                },
                "peak_rss_mb": round(samples[-1]["peak_mb"], 1),
                "fds_second_half": [half[0]["fds"], half[-1]["fds"]],
                "threads_second_half": [half[0]["threads"], half[-1]["threads"]],
                "disk_mb_per_million_frames": round(disk / max(frames, 1) * 1e6, 1),
                "api_errors": len(errors),
            }
            if bursts:
                summary["bursts"] = burst_table(samples, bursts)
            if subscriber is not None:
                summary["alerts_stored"] = alert_count(client) - alerts_before
                summary["alerts_received"] = len(received)
            print(json.dumps(summary, indent=2))
            if errors:
                print("first API errors:", *errors[:5], sep="\n  ")
            if args.trace_memory:
                native = trace / "native.tsv"
                if native.is_file():  # SQLite's and malloc's own counts, a minute apart (traced_run.py)
                    print(native.read_text())
                growth = trace / "growth.txt"
                print(growth.read_text() if growth.is_file() else "no growth report: run for over 2 × --trace-memory")
        finally:
            if bursts:
                bursts.stop()
            process.terminate()
            process.wait(30)
            if subscriber is not None:
                subscriber.terminate()
            log.close()


if __name__ == "__main__":
    main()
