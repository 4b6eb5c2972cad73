"""Pipeline throughput and latency on this machine, end to end: synth:line 128×128 grey frames →
queue → detector (onnxruntime) → SQLite → outbox → MQTT (a private Mosquitto when installed,
else the embedded broker).

    python benchmarks/pipeline_bench.py [--seconds 20] [--defect-rate 0.05] [--readers 20]

Reports, for a free-running source (as fast as the pipeline takes frames) and for paced ones
at 50 and 100 frames/s: sustained frames/s, dropped frames, and latency p50/p99 capture →
decision and capture → alert published (broker PUBACK). Goal (issue 5): ≥ 100 frames/s
sustained with p99 ≤ 100 ms, nothing dropped at 50 frames/s.

The last run adds ``--readers`` concurrent API clients reading ``/inspections`` and ``/alerts``
(a page of 50 each, in a loop, as consoles do) while the line runs at 100 frames/s, and reports
their latency p50/p99 per route. Goal (issue 14, item 11): 20 readers → 0 frames dropped, API
p99 ≤ 300 ms.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.runtime import Appliance  # noqa: E402
from appliance.settings import load_settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def measure(data: Path, model_dir: Path | None, source: str, seconds: float, mqtt: dict, readers: int = 0) -> dict:
    settings = load_settings(
        data_dir=data,
        sources=[source],
        api_port=0,
        mqtt=mqtt,
        queue_size=64,
    )  # the default detector, trained once on first start
    app = Appliance(settings, log=lambda line: None)
    app.models_dir.mkdir(parents=True, exist_ok=True)
    if model_dir is not None:  # the model of the first run, activated: no training again
        for f in model_dir.glob("*.zip"):
            shutil.copy(f, app.models_dir / f.name)
            app.activate(app.models_dir / f.name)
    app.start()
    time.sleep(3)  # warm-up
    latencies: dict[str, list[float]] = {"/inspections": [], "/alerts": []}
    stop = threading.Event()
    token = (data / "admin-token").read_text().strip()
    url = f"http://127.0.0.1:{app.api_port}"
    threads = [threading.Thread(target=read_api, args=(url, token, stop, latencies)) for _ in range(readers)]
    for t in threads:
        t.start()
    st0 = app.pipeline.status()[source]
    start = time.monotonic()
    time.sleep(seconds)
    st = app.pipeline.status()[source]
    elapsed = time.monotonic() - start
    stop.set()
    for t in threads:
        t.join(30)
    app.stop()
    return {
        "fps": (st["scored"] - st0["scored"]) / elapsed,
        "dropped": st["queue_dropped"] + st["frames_dropped"] - st0["queue_dropped"] - st0["frames_dropped"],
        "decision": st["capture_to_decision_ms"],
        "published": st["capture_to_alert_published_ms"],
        "alerts": st["decisions"]["ng"] + st["decisions"]["review"],
        # a paced source that falls behind its rate loses frames a camera would have dropped
        "behind": max(0, round(paced_fps(source) * elapsed - (st["frames_in"] - st0["frames_in"])))
        if paced_fps(source)
        else 0,
        "models": app.models_dir,
        "api": {route: np.percentile(v, [50, 99]).tolist() if v else None for route, v in latencies.items()},
        "api_requests": sum(len(v) for v in latencies.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--defect-rate", type=float, default=0.05)
    parser.add_argument("--readers", type=int, default=20, help="concurrent API readers in the last run")
    args = parser.parse_args()
    broker = None
    mqtt: dict = {}
    if shutil.which("mosquitto"):
        port = free_port()
        conf = Path(tempfile.mkdtemp()) / "m.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        mqtt = {"host": "127.0.0.1", "port": port}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            models = None
            for label, source in (
                ("free-running", f"synth:line?size=128&defect_rate={args.defect_rate}&seed=1"),
                ("paced 50/s", f"synth:line?size=128&fps=50&defect_rate={args.defect_rate}&seed=2"),
                ("paced 100/s", f"synth:line?size=128&fps=100&defect_rate={args.defect_rate}&seed=3"),
                (f"100/s+{args.readers} API", f"synth:line?size=128&fps=100&defect_rate={args.defect_rate}&seed=4"),
            ):
                readers = args.readers if "API" in label else 0
                folder = Path(tmp) / label.replace(" ", "-").replace("/", "").replace("+", "-")
                r = measure(folder, models, source, args.seconds, mqtt, readers)
                models = r["models"]
                d, p = r["decision"], r["published"]
                print(
                    f"{label:>13}: {r['fps']:6.1f} frames/s, dropped {r['dropped']}, behind {r['behind']}, "
                    f"alerts {r['alerts']}; "
                    f"capture→decision p50 {d['p50']:.1f} ms p99 {d['p99']:.1f} ms; "
                    f"capture→alert published p50 {p['p50']:.1f} ms p99 {p['p99']:.1f} ms"
                )
                if readers:
                    for route, q in r["api"].items():
                        print(f"{'':>13}  {route}: p50 {q[0]:.0f} ms p99 {q[1]:.0f} ms")
                    print(f"{'':>13}  {r['api_requests']} API requests from {readers} readers in {args.seconds:g} s")
    finally:
        if broker:
            broker.terminate()
    print(
        f"broker: {'mosquitto' if broker else 'embedded amqtt'}; goal: >= 100 frames/s with p99 <= 100 ms, "
        f"nothing dropped at 50 frames/s; with {args.readers} API readers at 100 frames/s: 0 dropped, API p99 <= 300 ms"
    )


if __name__ == "__main__":
    main()
