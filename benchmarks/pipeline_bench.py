"""Pipeline throughput and latency on this machine, end to end: synth:line 128×128 grey frames →
queue → detector (onnxruntime) → SQLite → outbox → MQTT (a private Mosquitto when installed,
else the embedded broker).

    python benchmarks/pipeline_bench.py [--seconds 20] [--defect-rate 0.05]

Reports, for a free-running source (as fast as the pipeline takes frames) and for a paced one
at 50 frames/s: sustained frames/s, dropped frames, and latency p50/p99 capture → decision and
capture → alert published (broker PUBACK). Goal (issue 5): ≥ 100 frames/s sustained with p99 ≤
100 ms, nothing dropped at 50 frames/s.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.runtime import Appliance  # noqa: E402
from appliance.settings import load_settings  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(data: Path, model_dir: Path | None, source: str, seconds: float, mqtt: dict) -> dict:
    settings = load_settings(
        data_dir=data,
        sources=[source],
        api_port=0,
        mqtt=mqtt,
        queue_size=64,
    )  # the default detector, trained once on first start
    app = Appliance(settings, log=lambda line: None)
    app.models_dir.mkdir(parents=True, exist_ok=True)
    if model_dir is not None:
        for f in model_dir.iterdir():
            shutil.copy(f, app.models_dir / f.name)
    app.start()
    time.sleep(3)  # warm-up
    st0 = app.pipeline.status()[source]
    start = time.monotonic()
    time.sleep(seconds)
    st = app.pipeline.status()[source]
    elapsed = time.monotonic() - start
    app.stop()
    return {
        "fps": (st["scored"] - st0["scored"]) / elapsed,
        "dropped": st["queue_dropped"] + st["frames_dropped"] - st0["queue_dropped"] - st0["frames_dropped"],
        "decision": st["capture_to_decision_ms"],
        "published": st["capture_to_alert_published_ms"],
        "alerts": st["decisions"]["ng"] + st["decisions"]["review"],
        "models": app.models_dir,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--defect-rate", type=float, default=0.05)
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
            ):
                r = measure(Path(tmp) / label.replace(" ", "-").replace("/", ""), models, source, args.seconds, mqtt)
                models = r["models"]
                d, p = r["decision"], r["published"]
                print(
                    f"{label:>13}: {r['fps']:6.1f} frames/s, dropped {r['dropped']}, alerts {r['alerts']}; "
                    f"capture→decision p50 {d['p50']:.1f} ms p99 {d['p99']:.1f} ms; "
                    f"capture→alert published p50 {p['p50']:.1f} ms p99 {p['p99']:.1f} ms"
                )
    finally:
        if broker:
            broker.terminate()
    print(
        f"broker: {'mosquitto' if broker else 'embedded amqtt'}; goal: >= 100 frames/s with p99 <= 100 ms, "
        "nothing dropped at 50 frames/s"
    )


if __name__ == "__main__":
    main()
