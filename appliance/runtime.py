"""``appliance run``: the appliance's main job.

On embedded defaults (``make run``): SQLite under the data directory, an embedded MQTT broker on
loopback, a synthetic production line. On first start with a synthetic source it trains the
default detector on normal parts of the synthetic line (it judges synthetic sources only), saves
and activates it, then inspects continuously, storing every result and sending alerts through the
durable outbox. Any other source without a model of its own is in teach mode until one is
promoted for it.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import uvicorn
from sqlalchemy.exc import OperationalError

from appliance import jobs, registry, shadow
from appliance.alerts.publisher import AlertPublisher, BrokerSettings
from appliance.alerts.schema import Topics
from appliance.broker import EmbeddedBroker, pick_port, port_free
from appliance.drift import DriftWatch
from appliance.errors import Conflict, NotFound, Unavailable
from appliance.images import ImageStore
from appliance.memory import release_free_memory
from appliance.opcua import OpcUaServer
from appliance.pipeline import Pipeline
from appliance.recipes import SYNTHETIC_SCOPE, Recipe, Recipes
from appliance.retention import retain
from appliance.settings import Settings, SettingsError
from appliance.sources import SourceBook
from appliance.storage import history, queries, store
from appliance.storage import recipes as recipes_db
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection, ShadowBinding, utcnow
from appliance.storage.spool import Spool
from appliance.teach import TeachFrames
from appliance.trigger import TriggerListener
from connectors.base import Source
from connectors.factory import build_source
from connectors.synthetic import SyntheticLine
from models.drift import DriftConfig
from models.inference import Inferencer
from models.preprocess import InputSpec, preprocess_batch

INTERRUPTED = "interrupted: the appliance stopped while the job ran; start it again"
SOURCE_STATE_KEYS = (
    "source_id",
    "state",
    "frames_in",
    "frames_dropped",
    "queue_dropped",
    "reconnects",
    "errors",
    "last_error",
    "mode",
    "model_version",
    "rejected",
    "last_rejected",
)


class Appliance:
    """The running appliance. Every attribute exists after ``__init__``; nothing connects or runs
    before ``start()``, and ``stop()`` ends what ``start()`` began, in the reverse order."""

    def __init__(self, settings: Settings, log: Callable[[str], None] = print) -> None:
        self.settings, self.log = settings, log
        self.data = Path(settings.data_dir)
        self.models_dir = self.data / "models"
        self.topics = Topics(settings.mqtt.prefix, settings.mqtt.site, settings.mqtt.line, settings.mqtt.appliance_id)
        self.engine = make_engine(settings.db_url)  # lazy: connects on first use
        self.sources = SourceBook(self.engine, self.data)
        self.images = ImageStore(self.data / "images")
        self.recipes = Recipes(self.engine, self.models_dir, settings.inference_threads)
        self.teach = TeachFrames(self.data / "teach", settings.teach_keep_frames, settings.teach_interval_s)
        self.broker: EmbeddedBroker | None = None
        self.broker_settings: BrokerSettings | None = None  # the broker in use, once started
        self.first_training: dict[str, Any] | None = None  # the first-start model's training progress
        self.publisher: AlertPublisher | None = None
        self.pipeline: Pipeline | None = None
        self.trigger: TriggerListener | None = None
        self.opcua: OpcUaServer | None = None
        self.server: uvicorn.Server | None = None
        self.api_port: int | None = None
        self.job_runner = jobs.JobRunner(
            self.engine, settings.db_url, self.data, settings.mqtt.appliance_id, settings.max_jobs
        )
        self.stopping = threading.Event()  # ends the retention and source-state loops
        self._threads: list[threading.Thread] = []
        self._db_ready = False
        self._last_states: dict[str, str] = {}
        self._announced: dict[str, tuple[str | None, float | None, float | None]] = {}  # retained thresholds
        # an API request and the loop that follows other nodes' changes may announce at once: each
        # reads what the pipeline uses and queues it in one step, so the newest queued is the newest used
        self._announcing = threading.Lock()
        self.loop_errors: dict[str, int] = {}  # background loop name → failed steps
        self._seen_change = 0  # the newest audit line the recipes were read after
        self._compacted = time.monotonic()  # when retention last rebuilt the inspection indexes
        self._data_lock: IO[str] | None = None  # the data folder, held from start() to stop()

    def migrate(self) -> None:
        """Create or migrate the schema, once."""
        if not self._db_ready:
            try:
                init_db(self.engine)
            except OperationalError as exc:  # unreachable, refused, no such database: the settings' to fix
                url = self.engine.url.render_as_string(hide_password=True)
                msg = f"database_url: cannot reach {url}: {str(exc.orig).strip().splitlines()[0]}"
                raise SettingsError(msg) from exc
            self._db_ready = True

    # -- models and recipes ---------------------------------------------------------------------
    def recipe_for(self, source_id: str | None = None) -> Recipe:
        """What judges ``source_id`` (None: the default model, with its every-source thresholds)."""
        if source_id is None:
            if self.recipes.default is None:
                msg = "no active model: every source is in teach mode until a model is promoted"
                raise Unavailable(msg)
            return self.recipes.default
        self.recipe_source(source_id)
        recipe = self.recipes.get(source_id)
        if recipe is None:
            msg = f"source {source_id!r} is in teach mode: no model judges it yet"
            raise Unavailable(msg)
        return recipe

    def active_model(self) -> Inferencer:
        """The default model (the active one in the registry)."""
        return self.recipe_for(None).model

    def refresh_recipes(self, sources: dict[str, Any] | None = None) -> None:
        """Re-read every source's recipe from the database, swap it in, announce what changed
        (``sources``: those about to be added at start; by default the pipeline's)."""
        self._seen_change = queries.last_change(self.engine)
        if sources is None:
            workers = {} if self.pipeline is None else dict(self.pipeline.workers)
            sources = {sid: w.source for sid, w in workers.items()}
        self.recipes.refresh(sources)
        self._announce_thresholds(list(sources))

    def register(self, path: Path) -> str:
        """Add a bundle file in the models folder to the registry; returns its version."""
        self.migrate()
        return registry.register(self.engine, path)

    def activate(self, path: Path, actor: str = "appliance", reason: str = "first start") -> None:
        store.activate_model(self.engine, version=self.register(path), actor=actor, reason=reason)

    def promote(self, version: str, actor: str, reason: str, source_id: str | None = None) -> Recipe:
        """Load the version's bundle (refusing a broken one) before anything changes; then make it
        the default model, or bind it to ``source_id`` (its recipe); swap it in, audited. A shadow
        of this version on that source ends as promoted, its comparison kept."""
        self.recipes.model(version)
        if source_id is None:
            store.activate_model(self.engine, version=version, actor=actor, reason=reason)
        else:
            self.recipe_source(source_id)
            if recipes_db.shadows(self.engine).get(source_id, ("",))[0] == version:
                self._end_shadow(version, source_id, actor, reason, "promoted")
            recipes_db.bind(self.engine, source_id=source_id, version=version, actor=actor, reason=reason)
        self.refresh_recipes()
        return self.recipe_for(source_id)

    def rollback(self, actor: str, reason: str, source_id: str | None = None) -> Recipe:
        """Back to the model that judged before: the default's, or the source's own."""
        if source_id is None:
            return self.promote(registry.previous_version(self.engine), actor, reason)
        self.recipe_source(source_id)
        previous = recipes_db.previous_binding(self.engine, source_id)
        if previous is None:
            msg = f"source {source_id!r} had no model of its own before this one"
            raise Conflict(msg)
        return self.promote(previous, actor, reason, source_id)

    def start_shadow(self, version: str, source_id: str, actor: str, reason: str) -> dict[str, Any]:
        """Put a registered version in shadow on a source that a model judges (appliance.shadow)."""
        recipe = self.recipe_for(source_id)  # a source that runs here, not in teach mode
        if recipe.version == version:
            msg = f"{version} judges source {source_id!r} already: a shadow compares another model with it"
            raise Conflict(msg)
        model = self.recipes.model(version)  # refuses a broken bundle before anything changes
        if model.input_spec.kind != recipe.model.input_spec.kind:
            msg = (
                f"{version} reads {model.input_spec.kind}s; source {source_id!r} gives {recipe.model.input_spec.kind}s"
            )
            raise Conflict(msg)
        recipes_db.start_shadow(self.engine, source_id=source_id, version=version, actor=actor, reason=reason)
        self.refresh_recipes()
        return shadow.comparison(self.engine, self._open_shadow(version, source_id), api_url=self.settings.public_url)

    def _open_shadow(self, version: str, source_id: str) -> ShadowBinding:
        running = [
            b for b in queries.shadow_bindings(self.engine, version=version, source_id=source_id) if b.ended_at is None
        ]
        if not running:
            msg = f"{version} is not in shadow on source {source_id!r}"
            raise NotFound(msg)
        return running[0]

    def _end_shadow(self, version: str, source_id: str, actor: str, reason: str, outcome: str) -> dict[str, Any]:
        binding = self._open_shadow(version, source_id)
        summary = shadow.comparison(self.engine, binding, api_url=self.settings.public_url)
        ended = recipes_db.end_shadow(
            self.engine,
            binding_id=int(binding.id),
            actor=actor,
            outcome=outcome,
            summary=shadow.kept(summary),
            reason=reason,
        )
        return shadow.comparison(self.engine, ended)

    def stop_shadow(self, version: str, source_id: str, actor: str, reason: str) -> dict[str, Any]:
        """End a shadow without promoting it; its comparison is kept."""
        out = self._end_shadow(version, source_id, actor, reason, "stopped")
        self.refresh_recipes()
        return out

    def shadow_comparison(self, version: str, source_id: str | None = None) -> list[dict[str, Any]]:
        """The version's shadows (running and ended, newest first) compared with the models they ran beside."""
        bindings = queries.shadow_bindings(self.engine, version=version, source_id=source_id)
        return [shadow.comparison(self.engine, b, api_url=self.settings.public_url) for b in bindings]

    def switch_recipe(self, source_id: str, version: str, actor: str = "PLC over MQTT") -> dict[str, Any]:
        """A recipe switch requested by a PLC (its sub-configuration signal): over MQTT's
        ``cmd/recipe``, or OPC UA's SelectRecipe."""
        recipe = self.promote(version, actor, f"recipe switch by {actor}", source_id)
        return {
            "source_id": source_id,
            "model_version": recipe.version,
            **dict(zip(("t1", "t2"), recipe.thresholds.as_tuple(), strict=True)),
        }

    def recipe_source(self, source_id: str) -> None:
        """A source a recipe can be bound to: one that runs here."""
        if source_id not in self.pipeline.workers:
            msg = f"no source {source_id!r}; sources: {sorted(self.pipeline.workers)}"
            raise NotFound(msg)

    def train_default(self) -> Path:
        """Train the default detector on normal parts from the synthetic line."""
        from tqdm import tqdm

        from engine.training import Callback
        from models.detector.model import Detector, DetectorConfig

        d = self.settings.detector
        spec = InputSpec(kind="image", channels=1, size=(d.size, d.size), pixels="counts")  # the line's 8-bit frames
        self.log(
            f"first start: training the default detector on {d.training_images} normal parts "
            f"({d.size}x{d.size}, {d.epochs} epochs)"
        )
        frames = [p.image for p in SyntheticLine(size=d.size, defect_rate=0.0, seed=12345).take(d.training_images)]
        detector = Detector(
            DetectorConfig(size=d.size, crop=d.crop, epochs=d.epochs, false_alarm_rate=d.false_alarm_rate)
        )
        bar = tqdm(total=d.epochs, desc="training detector", unit="epoch")

        progress = self.first_training = training_progress(d.epochs)

        class Progress(Callback):
            def on_epoch_end(self, trainer, record):
                bar.set_postfix_str(f"cost={record['cost']:.4f}")
                bar.update(1)
                progress.update(epoch=int(record["epoch"]), cost=float(record["cost"]))  # on /health and the console

        summary = detector.fit(preprocess_batch(frames, spec), callbacks=(Progress(),))
        bar.close()
        progress["state"] = "done"
        provenance = {"dataset": "synth:line normal parts, seed 12345", "scope": SYNTHETIC_SCOPE}
        bundle = detector.to_bundle(spec, provenance=provenance, name="default-detector")
        path = self.models_dir / f"detector-{bundle.version}.zip"
        bundle.save(path)
        cal = summary["calibration"]
        self.log(
            f"trained in {summary['train_seconds']:.0f} s; thresholds T1={cal['t1']:.4f} T2={cal['t2']:.4f} "
            f"(false-alarm rate {cal['false_alarm_rate']:.2%}, {cal['method']}); saved {path}"
        )
        return path

    def _first_model(self) -> None:
        """First start on a synthetic line: train its model while the API, the console and the line
        run (the synthetic sources wait in teach mode meanwhile), then put it to work."""
        try:
            self.activate(self.train_default())  # the synthetic line's model: it judges synthetic sources only
            self.refresh_recipes()
        except Exception as exc:  # the appliance keeps running, in teach mode, and says why
            logging.getLogger(__name__).exception("first-start training failed")
            self.first_training = {**(self.first_training or {}), "state": f"failed: {type(exc).__name__}: {exc}"}
        finally:
            self.pipeline.teach = self.teach  # not while training: no teach frames of the synthetic line
            release_free_memory()  # what training freed: about 180 MB resident the line never uses

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, wait_for_first_model: bool = True) -> Appliance:
        """Start everything; on a first start with a synthetic source, its model is trained with
        the API already serving (``wait_for_first_model`` False: return while it trains)."""
        s = self.settings
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self._lock_data()
        try:
            self.migrate()
        except BaseException:  # the database unreachable: nothing else started, nothing to hold
            self._release_data()
            raise
        self._first_admin_token()
        if store.fail_unfinished_jobs(self.engine, message=INTERRUPTED, node=s.mqtt.appliance_id):
            self.log("jobs interrupted by the last stop were marked failed")
        self.job_runner.start()
        sources = self._build_sources()
        first_model = store.active_model(self.engine) is None and any(src.kind == "synthetic" for src in sources)
        broker = self._broker_settings()
        self.pipeline = Pipeline(
            self.engine,
            self.recipes,
            self.topics,
            self.images,
            s.public_url,
            s.queue_size,
            debounce=s.debounce,
            keep_ok_images=s.keep_ok_images,
            spool=Spool(self.data / "spool.db", s.spool_max_items),
            teach=None if first_model else self.teach,
        )
        self.publisher = AlertPublisher(
            self.engine, broker, self.topics, on_sent=self.pipeline.on_published, spool=self.pipeline.spool
        ).start()
        self.pipeline.alerts_waiting = self.publisher.wake
        if s.drift.enabled:
            config = DriftConfig(**s.drift.model_dump(exclude={"enabled"}))
            self.pipeline.drift = DriftWatch(self.engine, self.topics, config, wake=self.publisher.wake.set)
        if s.inspections_per_second > 0:
            self.pipeline.on_inspected = self._publish_inspection
        self.trigger = TriggerListener(
            broker, self.topics, self.pipeline.capture_and_inspect, self.switch_recipe
        ).start()
        # what start-up costs is paid before the first frame is captured, not by the first frames
        # (they waited up to a second for the API's imports and the models' loading)
        from appliance.api import create_app

        app = create_app(self)
        self.refresh_recipes({source.source_id: source for source in sources})  # loads the line's models
        for source in sources:
            self.pipeline.add_source(source)
        self.pipeline.start()
        self._serve_api(app)
        if s.opcua.enabled:
            self.opcua = OpcUaServer(self, s.opcua).start()
            self.log(f"OPC UA: {self.opcua.endpoint}")
        self._loop("retention", 600.0, self._retain)
        # the rows readers count one by one stay a minute's worth, whatever the line's pace
        self._loop("history", 60.0, lambda: history.rollup(self.engine, before=dt.datetime.now(dt.UTC)))
        self._loop("source-states", 1.0, self._announce_source_states)
        self._loop("recipes", 2.0, self._follow_changes)  # another node's promotion or threshold change
        self._loop("spool", 1.0, self.pipeline.drain_spool)  # what waited for the database, in order
        self._loop("memory", 60.0, release_free_memory)  # freed heap back to the system: RSS tracks what is used
        self._say_started(broker, training=first_model)
        if first_model:
            self.first_training = training_progress(s.detector.epochs)  # on /health before training begins
            thread = threading.Thread(target=self._first_model, name="first-model", daemon=True)
            thread.start()
            if wait_for_first_model:
                thread.join()
        return self

    def _lock_data(self) -> None:
        """Hold the data folder for this process: a second appliance on it (started twice by
        mistake) would share its spool, images, teach frames and embedded broker's port and,
        on SQLite, its database. The kernel lets go when the process ends, however it ends."""
        import fcntl

        path = self.data / "appliance.lock"
        handle = path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            msg = (
                f"data_dir {self.data} is in use by another running appliance ({holder}); stop it, "
                "or give this one a data_dir of its own (nodes on one database each have their own)"
            )
            raise Conflict(msg) from None
        handle.seek(0)
        handle.truncate()
        started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        handle.flush()
        self._data_lock = handle

    def stop(self) -> None:
        """Stop in the reverse order of ``start``: API, OPC UA, loops, trigger, pipeline, publisher,
        broker, jobs; then let go of the data folder."""
        if self.server:
            self.server.should_exit = True
        if self.opcua:
            self.opcua.stop()
        self.stopping.set()
        for thread in self._threads:
            thread.join(5)
        if self.trigger:
            self.trigger.stop()
        if self.pipeline:
            self.pipeline.stop()
        if self.publisher:
            self.publisher.stop()  # before the spool closes: the publisher reads it
        if self.pipeline and self.pipeline.spool is not None:
            self.pipeline.spool.close()
        if self.broker:
            self.broker.stop()
        self.job_runner.stop()
        self._release_data()

    def _release_data(self) -> None:
        if self._data_lock is not None:
            self._data_lock.close()  # closing the file lets go of its lock
            self._data_lock = None

    def _broker_settings(self) -> BrokerSettings:
        """The configured broker, or an embedded one on loopback (started here) when none is set."""
        s = self.settings
        host, port = s.mqtt.host, s.mqtt.port
        if host is None:
            # the port of the last run when the configured one is taken, so subscribers keep working
            remembered = self.data / "embedded-broker-port"
            last = int(remembered.read_text()) if remembered.is_file() and remembered.read_text().isdigit() else 0
            preferred = s.mqtt.embedded_port if port_free(s.mqtt.embedded_port) else last
            self.broker = EmbeddedBroker(preferred or s.mqtt.embedded_port).start()
            remembered.write_text(str(self.broker.port))
            host, port = "127.0.0.1", self.broker.port
        self.broker_settings = BrokerSettings(
            host=host,
            port=port,
            username=s.mqtt.username,
            password=s.mqtt.password,
            tls=s.mqtt.tls,
            ca_file=s.mqtt.ca_file,
            protocol="3.1.1" if self.broker else s.mqtt.protocol,  # amqtt speaks 3.1.1 only
            keepalive=s.mqtt.keepalive,
        )
        return self.broker_settings

    def _build_sources(self) -> list[Source]:
        """The configured sources, then those added through the API earlier (not started yet)."""
        sources = [build_source(url) for url in self.settings.sources]
        ids = {src.source_id for src in sources}
        for source_id, url in self.sources.saved():
            if source_id not in ids:
                try:
                    sources.append(build_source(url, source_id))
                    ids.add(source_id)
                except ValueError as exc:  # e.g. a folder that is gone: say so, keep the rest running
                    self.log(f"stored source {source_id} cannot start: {exc}")
        return sources

    def _announce_thresholds(self, source_ids: list[str]) -> None:
        """Publish (retained) the model and thresholds each source is judged with, and the
        default's, whenever they change: the topics always say what the pipeline uses."""
        with self._announcing:
            scopes: list[tuple[str, str, Recipe | None]] = [("", self.topics.threshold, self.recipes.default)]
            scopes += [(sid, self.topics.source_threshold(sid), self.recipes.get(sid)) for sid in source_ids]
            for key, topic, recipe in scopes:
                now = (None, None, None) if recipe is None else (recipe.version, *recipe.thresholds.as_tuple())
                if self._announced.get(key) == now:
                    continue
                payload = {"source_id": key or None, "model_version": now[0], "t1": now[1], "t2": now[2]}
                payload["mode"] = "teach" if recipe is None else "inspecting"
                payload["ts"] = utcnow().isoformat()
                store.queue_message(self.engine, topic=topic, payload=payload, retain=True)
                self._announced[key] = now
        if self.publisher is not None:
            self.publisher.wake.set()

    def _say_started(self, broker: BrokerSettings, training: bool = False) -> None:
        s = self.settings
        self.log(f"database: {self.engine.url.render_as_string(hide_password=True)}")
        default = self.recipes.default
        self.log(
            "default model: training on the synthetic line now (progress on /health and the console's Live page)"
            if training
            else "default model: none (sources without a model of their own are in teach mode)"
            if default is None
            else f"default model: {default.version} (T1={default.thresholds.t1:.4f}, T2={default.thresholds.t2:.4f})"
        )
        for sid, st in self.pipeline.status().items():
            judged = "teach mode" if st["mode"] == "teach" else f"model {st['model_version']}, T2={st['t2']:.4f}"
            self.log(f"source {sid}: {st['url']} ({judged})")
        kind = "embedded broker" if self.broker else "broker"
        self.log(f"MQTT {kind}: {broker.host}:{broker.port}; alerts on {self.topics.alerts}")
        self.log(f"  subscribe: mosquitto_sub -h {broker.host} -p {broker.port} -t '{self.topics.alerts}' -v")
        self.log(f"REST API: http://{s.api_host}:{self.api_port}/docs (bearer token; see {self.data / 'admin-token'})")

    def _first_admin_token(self) -> None:
        if queries.has_tokens(self.engine):
            return
        token = store.create_token(self.engine, name="first-start admin", role="admin", expires_at=None)
        path = self.data / "admin-token"
        path.touch(mode=0o600)
        path.chmod(0o600)  # readable by its owner only
        path.write_text(token + "\n")
        self.log(f"first start: admin API token written to {path} (mode 600)")

    def _publish_inspection(self, i: Inspection) -> None:
        payload = {
            "source_id": i.source_id,
            "t_capture": i.t_capture.isoformat(),
            "decision": i.decision,
            "score": i.score,
            "norm_score": i.norm_score,
            "model_version": i.model_version,
        }
        self.publisher.publish_inspection(payload, self.settings.inspections_per_second)

    def _loop(self, name: str, every: float, step: Callable[[], None]) -> None:
        """Run ``step`` every ``every`` seconds until stop. A failing step never ends the loop: it is
        counted (``loop_errors``) and logged the first time it fails in a given way."""

        def loop() -> None:
            seen: set[str] = set()
            while not self.stopping.wait(every):
                try:
                    step()
                except Exception as exc:  # keep inspecting; say why the step failed, once
                    self.loop_errors[name] = self.loop_errors.get(name, 0) + 1
                    kind = f"{type(exc).__name__}: {exc}"
                    if kind not in seen:
                        seen.add(kind)
                        logging.getLogger(__name__).exception("%s failed (counted, logged once)", name)

        thread = threading.Thread(target=loop, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _follow_changes(self) -> None:
        """Nodes sharing a database: a model, recipe or threshold change made on another node
        (every one writes an audit line) is picked up here within a few seconds."""
        if queries.last_change(self.engine) != self._seen_change:
            self.refresh_recipes()

    def _retain(self) -> None:
        compact = time.monotonic() - self._compacted >= 86400  # the inspection indexes, once a day
        retain(
            self.engine,
            self.images,
            compact=compact,
            raw_window=dt.timedelta(days=self.settings.history_raw_days),
            max_age=dt.timedelta(days=self.settings.retention_days),
            max_bytes=int(self.settings.retention_max_gb * 1024**3),
        )
        if compact:
            self._compacted = time.monotonic()

    def _announce_source_states(self) -> None:
        """Announce each source's state, mode (teach / inspecting) and model on MQTT (retained)
        whenever one changes, and when it begins to send frames its model cannot read."""
        for sid, st in self.pipeline.status().items():
            now = f"{st['state']} {st['mode']} {st['model_version']} {bool(st.get('rejected'))}"
            if self._last_states.get(sid) != now:
                payload = {k: st.get(k) for k in SOURCE_STATE_KEYS} | {"ts": dt.datetime.now(dt.UTC).isoformat()}
                store.queue_message(self.engine, topic=self.topics.source_state(sid), payload=payload, retain=True)
                self._last_states[sid] = now  # only once queued: a database outage delays it, never loses it
                self.publisher.wake.set()

    def _serve_api(self, app: Any) -> None:
        self.api_port = pick_port(self.settings.api_port)
        config = uvicorn.Config(
            app, host=self.settings.api_host, port=self.api_port, log_level="warning", access_log=False
        )
        self.server = uvicorn.Server(config)
        thread = threading.Thread(target=self.server.run, name="api", daemon=True)
        thread.start()


def training_progress(epochs: int) -> dict[str, Any]:
    """The first-start model's progress as /health and the console show it."""
    return {"state": "training", "epoch": 0, "epochs": epochs, "cost": None}


def status_lines(status: dict[str, dict], delivered: int) -> list[str]:
    """One line per source for the console log (sources may come and go between two reports);
    ``delivered``: the durable MQTT messages the broker acknowledged since start, of every source
    (alerts, retained source states, drift events), not alerts alone."""
    lines = []
    for sid, st in status.items():
        lat = st.get("capture_to_decision_ms") or {"p50": 0.0, "p99": 0.0}
        dropped = st.get("queue_dropped", 0) + st.get("frames_dropped", 0) + st.get("store_failed", 0)
        lines.append(
            f"{sid}: {st.get('state')}, scored {st.get('scored', 0)} ({st.get('decisions', {})}), dropped "
            f"{dropped}, "
            + (f"unreadable {st['rejected']} (last: {st.get('last_rejected')}), " if st.get("rejected") else "")
            + f"capture→decision p50 {lat['p50']:.1f} ms p99 {lat['p99']:.1f} ms; "
            f"MQTT messages delivered {delivered}"
        )
    return lines


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
    appliance = Appliance(settings, log).start(wait_for_first_model=False)  # API and console up at once
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
            for line in status_lines(appliance.pipeline.status(), appliance.publisher.sent):
                log(line)
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
