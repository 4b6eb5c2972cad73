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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rate", type=float, default=20, help="alerts a second")
    parser.add_argument("--every", type=float, default=6, help="seconds between link faults")
    parser.add_argument("--fault", type=float, default=3, help="seconds a fault lasts")
    parser.add_argument("--database-url", help="default: SQLite in a temporary folder")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, private_mosquitto() as mqtt_settings:
        if not mqtt_settings:
            sys.exit("needs Mosquitto (apt install mosquitto)")
        engine = make_engine(args.database_url or f"sqlite:///{Path(tmp) / 'bench.db'}")
        init_db(engine)
        topics = Topics(appliance_id=f"bench-{uuid.uuid4().hex[:6]}")
        received: list[str] = []
        sub = mqtt.Client(CallbackAPIVersion.VERSION2)
        sub.on_connect = lambda c, *a: c.subscribe(topics.alerts, qos=1)
        sub.on_message = lambda c, u, m: received.append(json.loads(m.payload)["event_id"])
        sub.connect(mqtt_settings["host"], mqtt_settings["port"])
        sub.loop_start()
        proxy = Proxy(mqtt_settings["port"])
        publisher = AlertPublisher(engine, BrokerSettings(port=proxy.port, keepalive=1), topics).start()
        recorded: list[str] = []
        stop = threading.Event()

        def produce() -> None:
            start = time.monotonic()
            while not stop.is_set() and time.monotonic() - start < args.seconds:
                recorded.append(record(engine, topics))
                publisher.wake.set()
                time.sleep(max(0.0, start + len(recorded) / args.rate - time.monotonic()))

        producer = threading.Thread(target=produce)
        t0 = time.monotonic()
        producer.start()
        faults = collections.Counter()
        while producer.is_alive():
            producer.join(args.every)
            if not producer.is_alive():
                break
            kind = "silent link" if sum(faults.values()) % 2 == 0 else "connections dropped"
            proxy.stall() if kind == "silent link" else proxy.cut()
            faults[kind] += 1
            time.sleep(args.fault)
            proxy.restore()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not set(recorded) <= set(received):
            time.sleep(0.2)
        time.sleep(2)  # late second copies
        elapsed = time.monotonic() - t0
        publisher.stop()
        proxy.close()
        sub.loop_stop()
        counts = collections.Counter(received)
        lost = set(recorded) - set(received)
        twice = sum(1 for c in counts.values() if c > 1)
        print(f"alerts recorded        {len(recorded):,} ({args.rate:g} a second for {args.seconds:g} s)")
        print(f"faults                 {dict(faults)} ({args.fault:g} s each, every {args.every:g} s)")
        print(f"delivered              {len(set(received)):,} distinct, {len(received):,} messages")
        print(f"lost                   {len(lost)}")
        print(f"delivered twice+       {twice} ({sum(c - 1 for c in counts.values())} extra messages)")
        print(f"backlog left           {store.outbox_backlog(engine, topic_prefix=topics.own)}")
        print(f"wall time              {elapsed:.0f} s")


if __name__ == "__main__":
    main()
