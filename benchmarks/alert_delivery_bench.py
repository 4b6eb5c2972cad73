"""Alert delivery through link faults: none lost, how many twice?

    python benchmarks/alert_delivery_bench.py [--seconds 60] [--rate 20] [--every 6] [--fault 3]
                                             [--database-url postgresql+psycopg://…]

The real publisher (``AlertPublisher``: outbox → MQTT, QoS 1) sends alerts recorded at ``--rate``
a second for ``--seconds`` to a private Mosquitto through a TCP proxy that fails every ``--every``
seconds, in turn: the link goes silent for ``--fault`` seconds (connections kept open, nothing
passes: a switch rebooting; the client notices only when its 1 s keepalive runs out), or every
connection is dropped and refused for as long. A subscriber connected straight to the broker
counts what arrives. Prints the alerts recorded, delivered, lost (the goal: 0) and delivered
twice or more (QoS 1 is at-least-once; the goal: only what was in flight when a link failed, and
none of what the client sends again after a silent link), and the faults.

``--appliance`` runs the whole appliance instead (a synthetic line at 20 frames/s, 30 % defects,
a small detector with thresholds low enough that alerts flow; PostgreSQL from ``--database-url``
reached through a second proxy) and adds database outages to the faults: inspections wait in
the spool, their alerts go out from there, and both are written back when the database answers.
The alerts counted are those the database holds at the end.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from appliance.alerts.publisher import AlertPublisher, BrokerSettings  # noqa: E402
from appliance.alerts.schema import Topics, alert_message  # noqa: E402
from appliance.storage import store  # noqa: E402
from appliance.storage.db import init_db, make_engine  # noqa: E402
from appliance.storage.models import Inspection  # noqa: E402
from benchmarks.broker import private_mosquitto  # noqa: E402
from tests.helpers.proxy import Proxy  # noqa: E402


def record(engine, topics: Topics) -> str:
    inspection = Inspection(
        source_id="bench",
        t_capture=dt.datetime.now(dt.UTC),
        score=0.9,
        norm_score=0.8,
        decision="ng",
        model_version="m",
        latency_ms=1.0,
    )
    _, alert = store.record_inspection(
        engine,
        inspection=inspection,
        threshold=0.5,
        alert_topic=topics.alerts,
        build_message=lambda a, i: alert_message(a, i, topics),
    )
    return alert.event_id


def faults_until(done: threading.Event, kinds: list[tuple[str, object, object]], every: float, fault: float) -> dict:
    """Every ``every`` seconds one fault of ``kinds`` in turn, ``fault`` seconds long, until ``done``."""
    faults = collections.Counter()
    while not done.wait(every):
        name, start, end = kinds[sum(faults.values()) % len(kinds)]
        start()
        faults[name] += 1
        time.sleep(fault)
        end()
    return dict(faults)


def subscribe(mqtt_settings: dict, topic: str) -> tuple[mqtt.Client, list[str]]:
    received: list[str] = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *a: c.subscribe(topic, qos=1)
    sub.on_message = lambda c, u, m: received.append(json.loads(m.payload)["event_id"])
    sub.connect(mqtt_settings["host"], mqtt_settings["port"])
    sub.loop_start()
    return sub, received


def publisher_run(args, tmp: str, mqtt_settings: dict) -> tuple[list[str], list[str], dict, int]:
    engine = make_engine(args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}")
    init_db(engine)
    topics = Topics(appliance_id=f"bench-{uuid.uuid4().hex[:6]}")
    sub, received = subscribe(mqtt_settings, topics.alerts)
    proxy = Proxy(mqtt_settings["port"])
    publisher = AlertPublisher(engine, BrokerSettings(port=proxy.port, keepalive=1), topics).start()
    recorded: list[str] = []
    done = threading.Event()

    def produce() -> None:
        start = time.monotonic()
        while time.monotonic() - start < args.seconds:
            recorded.append(record(engine, topics))
            publisher.wake.set()
            time.sleep(max(0.0, start + len(recorded) / args.rate - time.monotonic()))
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    kinds = [("silent link", proxy.stall, proxy.restore), ("connections dropped", proxy.cut, proxy.restore)]
    faults = faults_until(done, kinds, args.every, args.fault)
    settle(lambda: set(recorded) <= set(received))
    publisher.stop()
    proxy.close()
    sub.loop_stop()
    return recorded, received, faults, store.outbox_backlog(engine, topic_prefix=topics.own)


def appliance_run(args, tmp: str, mqtt_settings: dict) -> tuple[list[str], list[str], dict, int]:
    from sqlmodel import Session, select

    from appliance.runtime import Appliance
    from appliance.settings import load_settings
    from appliance.storage.models import Alert

    if not (args.database_url or "").startswith("postgresql"):
        sys.exit("--appliance needs --database-url postgresql+psycopg://… (its outages are made with a proxy)")
    host, port = args.database_url.split("@", 1)[1].split("/", 1)[0].split(":")
    db_proxy, mqtt_proxy = Proxy(int(port), host), Proxy(mqtt_settings["port"])
    url = args.database_url.replace(f"{host}:{port}", f"127.0.0.1:{db_proxy.port}")
    line = "synth:line?size=64&fps=20&defect_rate=0.3&seed=6"
    settings = load_settings(
        data_dir=Path(tmp),
        api_port=0,
        database_url=url,
        sources=[line],
        mqtt={
            "host": "127.0.0.1",
            "port": mqtt_proxy.port,
            "appliance_id": f"bench-{uuid.uuid4().hex[:6]}",
            "keepalive": 1,
        },
        # small, and thresholds low enough that alerts flow
        detector={"size": 64, "crop": None, "epochs": 2, "training_images": 60, "false_alarm_rate": 0.2},
    )
    app = Appliance(settings, log=lambda _: None)
    sub, received = subscribe(mqtt_settings, app.topics.alerts)
    app.start()
    while app.pipeline.status()[line]["scored"] < 20:
        time.sleep(0.2)
    done = threading.Event()
    threading.Timer(args.seconds, done.set).start()
    kinds = [
        ("silent link", mqtt_proxy.stall, mqtt_proxy.restore),
        ("database outage", db_proxy.cut, db_proxy.restore),
        ("connections dropped", mqtt_proxy.cut, mqtt_proxy.restore),
    ]
    faults = faults_until(done, kinds, args.every, args.fault)
    settle(lambda: len(app.pipeline.spool or ()) == 0)
    with Session(app.engine) as session:
        stored = list(session.exec(select(Alert.event_id)).all())
    settle(lambda: set(stored) <= set(received))
    backlog = store.outbox_backlog(app.engine, topic_prefix=app.topics.own)
    app.stop()
    db_proxy.close()
    mqtt_proxy.close()
    sub.loop_stop()
    return stored, received, faults, backlog


def settle(predicate, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not predicate():
        time.sleep(0.2)
    time.sleep(2)  # late second copies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=20, help="alerts a second (publisher alone)")
    parser.add_argument("--every", type=float, default=6, help="seconds between faults")
    parser.add_argument("--fault", type=float, default=3, help="seconds a fault lasts")
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    parser.add_argument("--appliance", action="store_true", help="the whole appliance, with database outages")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, private_mosquitto() as mqtt_settings:
        if not mqtt_settings:
            sys.exit("needs Mosquitto (apt install mosquitto)")
        t0 = time.monotonic()
        run = appliance_run if args.appliance else publisher_run
        recorded, received, faults, backlog = run(args, tmp, mqtt_settings)
        counts = collections.Counter(received)
        lost = set(recorded) - set(received)
        what = "the appliance's line" if args.appliance else f"{args.rate:g} a second"
        print(f"alerts recorded        {len(recorded):,} ({what} for {args.seconds:g} s)")
        print(f"faults                 {faults} ({args.fault:g} s each, every {args.every:g} s)")
        print(f"delivered              {len(set(received)):,} distinct, {len(received):,} messages")
        print(f"lost                   {len(lost)}")
        twice, extra = sum(c > 1 for c in counts.values()), sum(c - 1 for c in counts.values())
        print(f"delivered twice+       {twice} ({extra} extra messages)")
        print(f"backlog left           {backlog}")
        print(f"wall time              {time.monotonic() - t0:.0f} s")


if __name__ == "__main__":
    main()
