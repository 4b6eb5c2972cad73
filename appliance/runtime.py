"""``appliance run``: the appliance's main job.

On embedded defaults (``make run``): SQLite under the data directory, an embedded MQTT broker on
loopback, a synthetic production line. On first start it trains the default detector on normal
images from the configured line, saves and activates it, then inspects continuously, storing
every result and sending alerts through the durable outbox.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from appliance.alerts.publisher import AlertPublisher, BrokerSettings
from appliance.alerts.schema import Topics
from appliance.broker import EmbeddedBroker
from appliance.images import ImageStore
from appliance.pipeline import ModelSlot, Pipeline
from appliance.settings import Settings
from appliance.storage import store
from appliance.storage.db import init_db, make_engine
from connectors.factory import open_source
from connectors.synthetic import SyntheticLine
from models.inference import Inferencer
from models.preprocess import InputSpec, preprocess_batch


class Appliance:
    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.settings, self.log = settings, log
        self.data = Path(settings.data_dir)
        self.models_dir = self.data / "models"
        self.topics = Topics(settings.mqtt.prefix, settings.mqtt.site, settings.mqtt.line, settings.mqtt.appliance_id)
        self.broker: EmbeddedBroker | None = None
        self.publisher: AlertPublisher | None = None
        self.pipeline: Pipeline | None = None
        self.server = None
        self.api_port: int | None = None
        self.engine = make_engine(settings.db_url)
        init_db(self.engine)

    # -- the model ------------------------------------------------------------------------
    def active_model(self) -> Path | None:
        row = store.active_model(self.engine)
        return None if row is None else self.models_dir / row[1]

    def register(self, path: Path) -> str:
        """Add a bundle file in the models folder to the registry; returns its version."""
        from models import bundle as bundle_io

        with bundle_io.open_zip(path) as zf:
            meta = bundle_io.read_meta(zf, str(path))
        metrics = {
            "calibration": meta.get("postprocess", {}).get("calibration"),
            "provenance_metrics": meta.get("provenance", {}).get("metrics"),
        }
        store.register_model(
            self.engine,
            version=str(meta["version"]),
            filename=path.name,
            digest=bundle_io.file_digest(path),
            kind=meta["kind"],
            metrics=metrics,
        )
        return str(meta["version"])

    def activate(self, path: Path, actor: str = "appliance", reason: str = "first start") -> None:
        store.activate_model(self.engine, version=self.register(path), actor=actor, reason=reason)

    def promote(self, version: str, actor: str, reason: str) -> Inferencer:
        """Load the version's bundle (refusing a broken one), record it as active, swap it in."""
        from sqlmodel import Session, select

        from appliance.storage.models import ModelVersion

        with Session(self.engine) as session:
            row = session.exec(select(ModelVersion).where(ModelVersion.version == version)).first()
        if row is None:
            msg = f"no model version {version!r}"
            raise KeyError(msg)
        inferencer = Inferencer(self.models_dir / row.filename)  # loads and checks before anything changes
        if inferencer.kind not in ("detector", "autoencoder"):
            from models.bundle import BundleError

            msg = f"model {version!r} is a {inferencer.kind}; the line runs anomaly models (detector or autoencoder)"
            raise BundleError(msg)
        store.activate_model(self.engine, version=version, actor=actor, reason=reason)
        self.slot.swap(inferencer)
        return inferencer

    def train_default(self) -> Path:
        """Train the default detector on normal parts from the synthetic line."""
        from tqdm import tqdm

        from engine.training import Callback
        from models.detector.model import Detector, DetectorConfig

        d = self.settings.detector
        spec = InputSpec(kind="image", channels=1, size=(d.size, d.size))
        self.log(
            f"first start: training the default detector on {d.training_images} normal parts "
            f"({d.size}x{d.size}, {d.epochs} epochs)"
        )
        frames = [p.image for p in SyntheticLine(size=d.size, defect_rate=0.0, seed=12345).take(d.training_images)]
        detector = Detector(
            DetectorConfig(size=d.size, crop=d.crop, epochs=d.epochs, false_alarm_rate=d.false_alarm_rate)
        )
        bar = tqdm(total=d.epochs, desc="training detector", unit="epoch")

        class Progress(Callback):
            def on_epoch_end(self, trainer, record):
                bar.set_postfix_str(f"cost={record['cost']:.4f}")
                bar.update(1)

        summary = detector.fit(preprocess_batch(frames, spec), callbacks=(Progress(),))
        bar.close()
        bundle = detector.to_bundle(
            spec, provenance={"dataset": "synth:line normal parts, seed 12345"}, name="default-detector"
        )
        path = self.models_dir / f"detector-{bundle.version}.zip"
        bundle.save(path)
        cal = summary["calibration"]
        self.log(
            f"trained in {summary['train_seconds']:.0f} s; thresholds T1={cal['t1']:.4f} T2={cal['t2']:.4f} "
            f"(false-alarm rate {cal['false_alarm_rate']:.2%}, {cal['method']}); saved {path}"
        )
        return path

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> Appliance:
        s = self.settings
        self.models_dir.mkdir(parents=True, exist_ok=True)
        engine = self.engine
        self._first_admin_token()
        from appliance import jobs

        if jobs.fail_interrupted(engine):
            self.log("jobs interrupted by the last stop were marked failed")
        model = self.active_model()
        if model is None:
            model = self.train_default()
            self.activate(model)
        inferencer = Inferencer(model)
        host, port = s.mqtt.host, s.mqtt.port
        if host is None:
            self.broker = EmbeddedBroker(s.mqtt.embedded_port).start()
            host, port = "127.0.0.1", self.broker.port
        self.slot, self.images = ModelSlot(inferencer), ImageStore(self.data / "images")
        self.pipeline = Pipeline(
            engine,
            self.slot,
            self.topics,
            self.images,
            s.public_url,
            s.queue_size,
            debounce=s.debounce,
            keep_ok_images=s.keep_ok_images,
        )
        protocol = "3.1.1" if self.broker else s.mqtt.protocol  # amqtt speaks 3.1.1 only
        broker = BrokerSettings(
            host=host,
            port=port,
            username=s.mqtt.username,
            password=s.mqtt.password,
            tls=s.mqtt.tls,
            ca_file=s.mqtt.ca_file,
            protocol=protocol,
        )
        self.publisher = AlertPublisher(engine, broker, self.topics, on_sent=self.pipeline.on_published).start()
        self.pipeline.alerts_waiting = self.publisher.wake
        if s.inspections_per_second > 0:
            rate = s.inspections_per_second
            self.pipeline.on_inspected = lambda i: self.publisher.publish_inspection(
                {
                    "source_id": i.source_id,
                    "t_capture": i.t_capture.isoformat(),
                    "decision": i.decision,
                    "score": i.score,
                    "norm_score": i.norm_score,
                    "model_version": i.model_version,
                },
                rate,
            )
        from appliance.trigger import TriggerListener

        self.trigger = TriggerListener(broker, self.topics, self.pipeline.capture_and_inspect).start()
        for url in s.sources:
            self.pipeline.add_source(open_source(url))
        for source_id, url in store.saved_sources(engine):  # added through the API earlier
            if source_id not in self.pipeline.workers:
                try:
                    self.pipeline.add_source(open_source(url, source_id))
                except ValueError as exc:  # e.g. a folder that is gone: say so, keep the rest running
                    self.log(f"stored source {source_id} cannot start: {exc}")
        self.pipeline.start()
        self._serve_api()
        self._start_retention()
        self._watch_sources()
        self.log(f"database: {s.db_url}")
        self.log(
            f"model: {model.name} (version {inferencer.version}, T1={inferencer.thresholds[0]:.4f}, "
            f"T2={inferencer.thresholds[1]:.4f})"
        )
        self.log(f"sources: {', '.join(s.sources)}")
        kind = "embedded broker" if self.broker else "broker"
        self.log(f"MQTT {kind}: {host}:{port}; alerts on {self.topics.alerts}")
        self.log(f"  subscribe: mosquitto_sub -h {host} -p {port} -t '{self.topics.alerts}' -v")
        self.log(f"REST API: http://{s.api_host}:{self.api_port}/docs (bearer token; see {self.data / 'admin-token'})")
        return self

    def _first_admin_token(self) -> None:
        if store.has_tokens(self.engine):
            return
        token = store.create_token(self.engine, name="first-start admin", role="admin")
        path = self.data / "admin-token"
        path.touch(mode=0o600)
        path.chmod(0o600)  # readable by its owner only
        path.write_text(token + "\n")
        self.log(f"first start: admin API token written to {path} (mode 600)")

    def _watch_sources(self, every: float = 1.0) -> None:
        """Announce each source's state on MQTT (retained) whenever it changes."""
        import datetime as dt
        import threading

        last: dict[str, str] = {}

        def loop() -> None:
            while not self.retention_stop.wait(every):
                for sid, st in self.pipeline.status().items():
                    if last.get(sid) != st["state"]:
                        last[sid] = st["state"]
                        keys = (
                            "source_id",
                            "state",
                            "frames_in",
                            "frames_dropped",
                            "queue_dropped",
                            "reconnects",
                            "errors",
                            "last_error",
                        )
                        payload = {k: st.get(k) for k in keys} | {"ts": dt.datetime.now(dt.UTC).isoformat()}
                        store.queue_message(
                            self.engine, topic=self.topics.source_state(sid), payload=payload, retain=True
                        )
                        self.publisher.wake.set()

        threading.Thread(target=loop, name="source-states", daemon=True).start()

    def _start_retention(self, every: float = 600.0) -> None:
        import datetime as dt
        import logging
        import threading

        from appliance.retention import prune

        self.retention_stop = threading.Event()

        def loop() -> None:
            while not self.retention_stop.wait(every):
                try:
                    prune(
                        self.engine,
                        self.images,
                        max_age=dt.timedelta(days=self.settings.retention_days),
                        max_bytes=int(self.settings.retention_max_gb * 1024**3),
                    )
                except Exception:  # keep inspecting; say why retention failed
                    logging.getLogger(__name__).exception("retention failed")

        threading.Thread(target=loop, name="retention", daemon=True).start()

    def _serve_api(self) -> None:
        import threading

        import uvicorn

        from appliance.api import create_app
        from appliance.broker import pick_port

        self.api_port = pick_port(self.settings.api_port)
        config = uvicorn.Config(
            create_app(self), host=self.settings.api_host, port=self.api_port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        threading.Thread(target=self.server.run, name="api", daemon=True).start()

    def stop(self) -> None:
        from appliance import jobs

        jobs.stop_all()
        if getattr(self, "retention_stop", None):
            self.retention_stop.set()
        if self.server:
            self.server.should_exit = True
        if getattr(self, "trigger", None):
            self.trigger.stop()
        if self.pipeline:
            self.pipeline.stop()
        if self.publisher:
            self.publisher.stop()
        if self.broker:
            self.broker.stop()


def next_pause(duration: float | None, report_every: float, elapsed: float) -> float:
    """Seconds until the next status line: every ``report_every``, or sooner when ``duration`` ends."""
    left = report_every if duration is None else duration - elapsed
    return max(0.1, min(report_every, left))


def run(
    settings: Settings,
    duration: float | None = None,
    log: Callable[[str], None] = print,
    report_every: float = 10.0,
    console: tuple[str, int] | None = None,
) -> int:
    """The main job; with ``console`` (host, port) the operator console runs beside it, signed in
    with the first-start admin token when that file exists."""
    import signal
    import threading

    def stop_on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # systemd's stop: the same orderly stop as Ctrl-C

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, stop_on_sigterm)
    appliance = Appliance(settings, log).start()
    console_process = None
    if console is not None:
        from appliance.console import start_console

        token_file = appliance.data / "admin-token"
        token = token_file.read_text().strip() if token_file.is_file() else None
        console_process = start_console(f"http://127.0.0.1:{appliance.api_port}", token, *console)
        log(f"operator console: http://{console[0]}:{console[1]}/")
    else:
        log("operator console: not started (`appliance console` or `appliance run --console` starts it)")
    start = time.monotonic()
    try:
        while duration is None or time.monotonic() - start < duration:
            time.sleep(next_pause(duration, report_every, time.monotonic() - start))
            for sid, st in appliance.pipeline.status().items():
                lat = st["capture_to_decision_ms"]
                log(
                    f"{sid}: {st['state']}, scored {st['scored']} ({st['decisions']}), dropped "
                    f"{st['queue_dropped'] + st['frames_dropped']}, capture→decision p50 {lat['p50']:.1f} ms "
                    f"p99 {lat['p99']:.1f} ms; alerts sent {appliance.publisher.sent}"
                )
    except KeyboardInterrupt:
        log("stopping")
    finally:
        if console_process is not None:
            console_process.terminate()
            console_process.wait(10)
        appliance.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
