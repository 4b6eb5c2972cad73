"""Does one heavy request hurt the line? (issue 14, item 10)

    python benchmarks/api_bench.py [--seconds 20]

An appliance on embedded defaults (SQLite, a private Mosquitto when installed) inspects a
synthetic line at 50 frames/s. For ``--seconds`` each, it measures ``/health`` latency (p50 / p99
of a request every 50 ms) and the line's frames/s: alone, then while four clients upload
3000×3000 photographs (about 7 MB of PNG) to ``/inspect`` back to back, then while one client
uploads a zip of 40 1000×1000 images (about 33 MB) as a dataset again and again.
Goal: ``/health`` p99 stays under 100 ms and the line keeps its 50 frames/s whatever the uploads
do (decoding and unpacking run off the event loop, and ``/health`` itself on it, never queued
behind the API's worker threads).
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from appliance.runtime import Appliance  # noqa: E402
from appliance.settings import load_settings  # noqa: E402
from benchmarks.broker import private_mosquitto  # noqa: E402


def photograph(rng: np.random.Generator, size: int = 3000) -> bytes:
    image = cv2.GaussianBlur(rng.integers(0, 256, (size, size), dtype=np.uint8), (3, 3), 0)
    return cv2.imencode(".png", image)[1].tobytes()


def dataset_zip(rng: np.random.Generator, images: int = 40) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(images):
            zf.writestr(f"normal/{i:03d}.png", photograph(rng, 1000))
    return buffer.getvalue()


def load(url: str, token: str, stop: threading.Event, kind: str, payload: bytes, counts: dict) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=120) as client:
        while not stop.is_set():
            if kind == "inspect":
                r = client.post("/inspect", files={"file": ("part.png", payload, "image/png")})
            else:
                name = f"bulk{counts['sent']}"
                r = client.post(
                    "/datasets/upload", params={"name": name}, files={"file": ("d.zip", payload, "application/zip")}
                )
            counts["sent"] += 1
            counts["ok"] += r.status_code < 300


def measure(app: Appliance, url: str, token: str, seconds: float, kind: str | None, payload: bytes) -> str:
    stop, counts = threading.Event(), {"sent": 0, "ok": 0}
    workers = [
        threading.Thread(target=load, args=(url, token, stop, kind, payload, counts))
        for _ in range(4 if kind == "inspect" else 1 if kind else 0)
    ]
    for w in workers:
        w.start()
    time.sleep(1)
    source = next(iter(app.pipeline.status()))
    scored0, t0 = app.pipeline.status()[source]["scored"], time.monotonic()
    latencies = []
    with httpx.Client(base_url=url, timeout=30) as client:
        while time.monotonic() - t0 < seconds:
            start = time.perf_counter()
            client.get("/health").raise_for_status()
            latencies.append((time.perf_counter() - start) * 1000)
            time.sleep(0.05)
    fps = (app.pipeline.status()[source]["scored"] - scored0) / (time.monotonic() - t0)
    stop.set()
    for w in workers:
        w.join(180)
    p50, p99 = np.percentile(latencies, [50, 99])
    what = {"inspect": "4 clients uploading 3000² photographs", "dataset": "a 40-image dataset zip again and again"}
    load_text = what.get(kind or "", "no uploads")
    extra = f", {counts['ok']}/{counts['sent']} uploads answered 2xx" if kind else ""
    return f"{load_text:>38}: /health p50 {p50:5.1f} ms p99 {p99:6.1f} ms; line {fps:5.1f} frames/s{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    picture, bundle = photograph(rng), dataset_zip(rng)
    with private_mosquitto() as mqtt:
        with tempfile.TemporaryDirectory() as tmp:
            settings = load_settings(
                data_dir=Path(tmp), sources=["synth:line?size=128&fps=50&seed=5"], api_port=0, mqtt=mqtt
            )
            app = Appliance(settings, log=lambda line: None).start()
            while (app.first_training or {}).get("state") != "done":  # the first start trains the line's model
                time.sleep(1)
            url, token = f"http://127.0.0.1:{app.api_port}", (Path(tmp) / "admin-token").read_text().strip()
            print(f"photograph {len(picture) / 1e6:.1f} MB, dataset zip {len(bundle) / 1e6:.1f} MB")
            for kind in (None, "inspect", "dataset"):
                print(measure(app, url, token, args.seconds, kind, bundle if kind == "dataset" else picture))
            app.stop()
    print(f"peak memory {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB; goal: /health p99 < 100 ms")


if __name__ == "__main__":
    main()
