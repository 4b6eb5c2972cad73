"""Alerts over MQTT through the durable outbox, against real Mosquitto and real databases."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from appliance.alerts.publisher import AlertPublisher, BrokerSettings
from appliance.alerts.schema import ALERT_SCHEMA_VERSION, Topics, alert_message
from appliance.storage import store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection
from tests.helpers.broker import Subscriber
from tests.helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def add_inspections(engine, topics: Topics, n: int, decision: str = "ng") -> list:
    alerts = []
    for _ in range(n):
        inspection = Inspection(
            source_id="synth:line",
            t_capture=dt.datetime.now(dt.UTC),
            score=0.9,
            norm_score=0.8,
            decision=decision,
            model_version="m1",
            latency_ms=3.0,
            image_ref="abc",
        )
        _, alert = store.record_inspection(
            engine,
            inspection=inspection,
            threshold=0.5,
            alert_topic=topics.alerts,
            build_message=lambda a, i: alert_message(a, i, topics, "http://api"),
        )
        alerts.append(alert)
    return alerts


def test_alerts_reach_a_subscriber_on_the_system_broker_with_the_documented_schema(db_url, system_broker):
    engine = make_engine(db_url)
    init_db(engine)
    topics = Topics(prefix=f"test-{uuid.uuid4().hex[:6]}", site="plant", line="l1", appliance_id="a1")
    sub = Subscriber(system_broker, [topics.alerts, topics.status])
    publisher = AlertPublisher(engine, BrokerSettings(port=system_broker), topics).start()
    try:
        assert wait_for(lambda: publisher.connected.is_set())
        sent = add_inspections(engine, topics, 3)
        add_inspections(engine, topics, 2, decision="ok")  # no alert for OK items
        assert wait_for(lambda: len(sub.alerts()) == 3)
        message = sub.alerts()[0]
        assert set(message) == {
            "schema_version",
            "event_id",
            "ts",
            "t_capture",
            "site",
            "line",
            "appliance_id",
            "source_id",
            "inspection_id",
            "score",
            "norm_score",
            "decision",
            "threshold",
            "label",
            "item",
            "model_version",
            "image_url",
            "heatmap_url",
        }
        assert message["schema_version"] == ALERT_SCHEMA_VERSION and message["decision"] == "ng"
        assert {m["event_id"] for m in sub.alerts()} == {a.event_id for a in sent}
        assert message["image_url"] == f"http://api/inspections/{message['inspection_id']}/image"
        assert b"online" in sub.payloads("/status")
        assert wait_for(lambda: store.outbox_backlog(engine, topic_prefix=topics.own) == 0)
    finally:
        publisher.stop()
        sub.close()


def test_broker_outage_loses_nothing(db_url, broker):
    engine = make_engine(db_url)
    init_db(engine)
    topics = Topics(appliance_id=f"a-{uuid.uuid4().hex[:6]}")
    sub = Subscriber(broker.port, [topics.alerts])
    publisher = AlertPublisher(engine, BrokerSettings(port=broker.port), topics).start()
    try:
        assert wait_for(lambda: publisher.connected.is_set())
        expected = {a.event_id for a in add_inspections(engine, topics, 5)}
        assert wait_for(lambda: len(sub.alerts()) >= 5)
        broker.stop()
        for _ in range(6):  # defects keep coming for several seconds while the broker is down
            expected |= {a.event_id for a in add_inspections(engine, topics, 2)}
            time.sleep(0.5)
        assert store.outbox_backlog(engine, topic_prefix=topics.own) == 12
        broker.start()
        assert wait_for(lambda: {m["event_id"] for m in sub.alerts()} == expected, timeout=30)
        raw = [m["event_id"] for m in sub.alerts()]
        assert len(raw) - len(set(raw)) <= 1  # QoS 1: at most an unacknowledged one may repeat
        assert wait_for(lambda: store.outbox_backlog(engine, topic_prefix=topics.own) == 0)
    finally:
        publisher.stop()
        sub.close()


def test_alerts_in_flight_when_the_link_goes_silent_reach_the_subscriber_once(db_url, broker):
    """A link that stops answering is noticed only when the keepalive runs out; what was sent
    meanwhile waits in paho, which sends it again on reconnecting. The outbox must not send it as
    well (before: every alert of those seconds arrived twice)."""
    from tests.helpers.proxy import Proxy

    engine = make_engine(db_url)
    init_db(engine)
    topics = Topics(appliance_id=f"a-{uuid.uuid4().hex[:6]}")
    sub = Subscriber(broker.port, [topics.alerts])
    proxy = Proxy(broker.port)
    publisher = AlertPublisher(engine, BrokerSettings(port=proxy.port, keepalive=1), topics).start()
    try:
        assert wait_for(lambda: publisher.connected.is_set())
        proxy.stall()
        expected = {a.event_id for a in add_inspections(engine, topics, 5)}
        assert wait_for(lambda: len(publisher.inflight) == 5)  # handed to paho: the broker got none
        assert wait_for(lambda: not publisher.connected.is_set())  # the keepalive ran out
        proxy.restore()
        assert wait_for(lambda: {m["event_id"] for m in sub.alerts()} == expected, timeout=30)
        assert wait_for(lambda: store.outbox_backlog(engine, topic_prefix=topics.own) == 0)
        time.sleep(1.5)  # a second copy, if there were one, would arrive by now
        received = [m["event_id"] for m in sub.alerts()]
        assert sorted(received) == sorted(expected)
    finally:
        publisher.stop()
        proxy.close()
        sub.close()


CHILD = """
import datetime as dt, sys, time
from appliance.alerts.publisher import AlertPublisher, BrokerSettings
from appliance.alerts.schema import Topics, alert_message
from appliance.storage import store
from appliance.storage.db import init_db, make_engine
from appliance.storage.models import Inspection
url, port, appliance_id, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
engine = make_engine(url); init_db(engine)
topics = Topics(appliance_id=appliance_id)
AlertPublisher(engine, BrokerSettings(port=port, keepalive=1), topics).start()
for _ in range(n):
    i = Inspection(source_id="s", t_capture=dt.datetime.now(dt.UTC), score=1, norm_score=1, decision="ng",
                   model_version="m", latency_ms=1)
    store.record_inspection(engine, inspection=i, threshold=0.5, alert_topic=topics.alerts,
                            build_message=lambda a, ins: alert_message(a, ins, topics))
print("recorded", flush=True)
time.sleep(600)
"""


def test_killed_appliance_sends_pending_alerts_after_restart(db_url, broker):
    topics = Topics(appliance_id=f"a-{uuid.uuid4().hex[:6]}")
    broker.stop()  # alerts pile up in the outbox: nothing can be sent
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, str(broker.port), topics.appliance_id, "4"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "recorded"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    broker.start()
    sub = Subscriber(broker.port, [topics.alerts])
    engine = make_engine(db_url)
    assert store.outbox_backlog(engine, topic_prefix=topics.own) == 4
    publisher = AlertPublisher(engine, BrokerSettings(port=broker.port), topics).start()
    try:
        assert wait_for(lambda: len({m["event_id"] for m in sub.alerts()}) == 4)
        assert wait_for(lambda: store.outbox_backlog(engine, topic_prefix=topics.own) == 0)
    finally:
        publisher.stop()
        sub.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_last_will_says_offline_when_the_appliance_dies(db_url, broker):
    topics = Topics(appliance_id=f"a-{uuid.uuid4().hex[:6]}")
    sub = Subscriber(broker.port, [topics.status])
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, db_url, str(broker.port), topics.appliance_id, "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "recorded"
        assert wait_for(lambda: b"online" in sub.payloads("/status"))
        os.kill(child.pid, signal.SIGKILL)
        assert wait_for(lambda: sub.payloads("/status")[-1:] == [b"offline"], timeout=10)
    finally:
        child.kill()
        sub.close()
    late = Subscriber(broker.port, [topics.status])  # retained: a newcomer learns the state at once
    try:
        assert wait_for(lambda: late.payloads("/status") == [b"offline"])
    finally:
        late.close()


def test_embedded_broker_gets_alerts_over_mqtt_3_1_1(tmp_path):
    """amqtt speaks 3.1.1 only: the publisher notices and falls back."""
    from appliance.alerts.publisher import speaks_mqtt5
    from appliance.broker import EmbeddedBroker

    broker = EmbeddedBroker(0).start()
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(engine)
    topics = Topics(appliance_id="embedded")
    settings = BrokerSettings(port=broker.port)
    assert not speaks_mqtt5(settings)
    sub = Subscriber(broker.port, [topics.alerts])
    publisher = AlertPublisher(engine, settings, topics).start()
    try:
        time.sleep(0.3)
        sent = add_inspections(engine, topics, 2)
        assert wait_for(lambda: {m["event_id"] for m in sub.alerts()} == {a.event_id for a in sent})
    finally:
        publisher.stop()
        sub.close()
        broker.stop()


def test_mosquitto_speaks_mqtt5(system_broker):
    from appliance.alerts.publisher import speaks_mqtt5

    assert speaks_mqtt5(BrokerSettings(port=system_broker))


def test_an_alert_both_spooled_and_stored_goes_out_once(db_url, broker, tmp_path):
    """A cut between the database's commit and its answer leaves a batch both stored (its outbox
    rows pending) and spooled (its alerts sent from the spool): each alert must reach the broker
    once, before and after the batch is written back."""
    from appliance.images import ImageStore
    from appliance.pipeline import Pipeline
    from appliance.recipes import Recipes
    from appliance.storage.spool import Spool

    engine = make_engine(db_url)
    init_db(engine)
    topics = Topics(appliance_id=f"a-{uuid.uuid4().hex[:6]}")
    pipeline = Pipeline(engine, Recipes(engine, tmp_path / "models"), topics, ImageStore(tmp_path / "img"))
    pipeline.spool = Spool(tmp_path / "spool.db")
    t0 = dt.datetime.now(dt.UTC)
    batch = [
        (
            Inspection(
                source_id="s",
                t_capture=t0 + dt.timedelta(milliseconds=k),
                score=1,
                norm_score=1,
                decision="ng",
                model_version="m",
                latency_ms=1,
            ),
            0.5,
            f"{topics.appliance_id}-{k}",
        )
        for k in range(8)
    ]
    stored = pipeline._record(batch)  # committed, but the answer was lost ...
    pipeline._spool(batch)  # ... so the line spooled it as well
    expected = {alert.event_id for _, alert in stored}
    sub = Subscriber(broker.port, [topics.alerts])
    publisher = AlertPublisher(engine, BrokerSettings(port=broker.port), topics, spool=pipeline.spool).start()
    try:
        assert wait_for(lambda: {m["event_id"] for m in sub.alerts()} == expected)
        time.sleep(1.5)  # the outbox is read again meanwhile: what the spool holds is not sent from there
        assert store.outbox_backlog(engine, topic_prefix=topics.own) == 8
        assert pipeline.drain_spool() == 8
        assert wait_for(lambda: store.outbox_backlog(engine, topic_prefix=topics.own) == 0)
        time.sleep(1.5)
        received = [m["event_id"] for m in sub.alerts()]
        assert sorted(received) == sorted(expected)  # each once
    finally:
        publisher.stop()
        sub.close()


def test_acknowledgements_the_database_missed_are_recorded_when_it_answers(db_url, broker, tmp_path):
    """An alert the broker acknowledged while the database could not record it is remembered in
    the spool (through a kill) and marked sent when the database answers, not sent again."""
    from appliance.storage.spool import Spool

    engine = make_engine(db_url)
    init_db(engine)
    topics = Topics(appliance_id=f"a-{uuid.uuid4().hex[:6]}")
    sent, waiting = (alert.event_id for alert in add_inspections(engine, topics, 2))
    spool = Spool(tmp_path / "spool.db")
    spool.remember_sent([sent])
    sub = Subscriber(broker.port, [topics.alerts])
    publisher = AlertPublisher(engine, BrokerSettings(port=broker.port), topics, spool=spool).start()
    try:
        assert wait_for(lambda: [m["event_id"] for m in sub.alerts()] == [waiting])
        assert wait_for(lambda: store.outbox_backlog(engine, topic_prefix=topics.own) == 0)
        assert spool.remembered(10) == []
        time.sleep(1)
        assert [m["event_id"] for m in sub.alerts()] == [waiting]
    finally:
        publisher.stop()
        sub.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_alerts_the_broker_refuses_are_said_and_kept_pending(db_url, tmp_path, caplog):
    """A broker whose access rules do not let the appliance publish its alerts answers each with
    a refusal (MQTT 5 reason code): the log says so once, naming the topic, and the alerts stay
    pending, sent again now and then rather than at every poll."""
    import logging
    import os

    from appliance.alerts import publisher as publisher_module
    from tests.helpers.broker import Broker

    broker = Broker(tmp_path)
    (tmp_path / "acl").write_text("topic read #\ntopic write appliance/+/+/+/status\n")
    user = "user root\n" if os.geteuid() == 0 else ""  # as root Mosquitto drops to a user that cannot read tmp_path
    broker.conf.write_text(broker.conf.read_text() + f"{user}acl_file {tmp_path / 'acl'}\n")
    broker.start()
    engine = make_engine(db_url)
    init_db(engine)
    topics = Topics(appliance_id=f"a-{uuid.uuid4().hex[:6]}")
    publisher = AlertPublisher(engine, BrokerSettings(port=broker.port, protocol="5"), topics, recheck=0.2)
    caplog.set_level(logging.WARNING, logger=publisher_module.__name__)
    publisher.start()
    try:
        assert wait_for(lambda: publisher.connected.is_set())
        add_inspections(engine, topics, 3)
        publisher.wake.set()
        assert wait_for(lambda: publisher.refused == 3)
        time.sleep(1.5)  # polled every 0.2 s meanwhile: refused ones are not sent again so soon
        assert publisher.refused == 3 and store.outbox_backlog(engine, topic_prefix=topics.own) == 3
        said = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(said) == 1 and topics.alerts in said[0] and "access rules" in said[0], said
    finally:
        publisher.stop()
        broker.stop()


def test_a_broker_refusing_the_connection_is_said_once_not_at_every_retry(tmp_path, caplog):
    import logging

    from appliance.alerts import publisher as publisher_module
    from tests.helpers.broker import Broker

    broker = Broker(tmp_path)
    broker.conf.write_text(broker.conf.read_text().replace("allow_anonymous true", "allow_anonymous false"))
    broker.start()
    engine = make_engine(f"sqlite:///{tmp_path / 'a.db'}")
    init_db(engine)
    caplog.set_level(logging.WARNING, logger=publisher_module.__name__)
    publisher = AlertPublisher(engine, BrokerSettings(port=broker.port, protocol="5"), Topics()).start()
    try:
        time.sleep(3)  # retried meanwhile (0.2 s, doubling)
        said = [r.getMessage() for r in caplog.records if "refused the connection" in r.getMessage()]
        assert len(said) == 1 and "Not authorized" in said[0], said
        assert not publisher.connected.is_set()
    finally:
        publisher.stop()
        broker.stop()


def test_a_batch_is_stored_whole_with_its_alerts_and_messages_or_not_at_all(db_url):
    """One transaction per batch: each inspection gets its row's id (in order), each flagged one an
    alert and its outbox message naming that row. A batch holding an event id stored already
    (a replay) stores nothing, and its inspections keep no id a message could point at."""
    from sqlalchemy.exc import IntegrityError
    from sqlmodel import Session, select

    from appliance.storage.models import Alert, OutboxMessage

    engine = make_engine(db_url)
    init_db(engine)
    topics = Topics()

    def batch(decisions, event_ids=None):
        items = []
        for k, decision in enumerate(decisions):
            inspection = Inspection(
                source_id="cam",
                t_capture=dt.datetime.now(dt.UTC),
                score=float(k),
                norm_score=0.5,
                decision=decision,
                model_version="m1",
                latency_ms=1.0,
                image_ref="abc",
            )
            items.append((inspection, 0.5, (event_ids or {}).get(k)))
        return items

    def record(items):
        return store.record_inspections(
            engine, inspections=items, alert_topic=topics.alerts, build_message=lambda a, i: alert_message(a, i, topics)
        )

    stored = record(batch(["ok", "ng", "ok", "review"]))
    ids = [inspection.id for inspection, _ in stored]
    assert None not in ids and ids == sorted(ids)
    with Session(engine) as session:
        rows = {i.id: i.score for i in session.exec(select(Inspection))}
        alerts = list(session.exec(select(Alert).order_by(Alert.id)))
        messages = list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)))
    assert [rows[i] for i in ids] == [0.0, 1.0, 2.0, 3.0]  # each object got its own row's id
    assert [a.inspection_id for a in alerts] == [ids[1], ids[3]] == [a.inspection_id for _, a in stored if a]
    assert [m.event_id for m in messages] == [a.event_id for a in alerts]
    assert [json.loads(m.payload)["inspection_id"] for m in messages] == [ids[1], ids[3]]
    assert all(f"/inspections/{i}/image" in m.payload for m, i in zip(messages, [ids[1], ids[3]], strict=True))

    replay = batch(["ok", "ng"], {1: alerts[0].event_id})
    with pytest.raises(IntegrityError):
        record(replay)
    assert [inspection.id for inspection, _, _ in replay] == [None, None]
    with Session(engine) as session:
        assert len(session.exec(select(Inspection)).all()) == 4
        assert len(session.exec(select(OutboxMessage)).all()) == 2
    engine.dispose()


def test_a_batch_gets_its_ids_where_the_database_cannot_return_them_from_one_insert(tmp_path, monkeypatch):
    """SQLite before 3.35 has no RETURNING: the rows are inserted one by one for their ids."""
    engine = make_engine(f"sqlite:///{tmp_path / 'appliance.db'}")
    init_db(engine)
    with engine.connect() as connection:
        dialect = type(connection.dialect)
    monkeypatch.setattr(dialect, "insert_executemany_returning_sort_by_parameter_order", False)
    topics = Topics()
    items = [
        (
            Inspection(
                source_id="cam",
                t_capture=dt.datetime.now(dt.UTC),
                score=float(k),
                norm_score=0.5,
                decision="ng" if k else "ok",
                model_version="m1",
                latency_ms=1.0,
            ),
            0.5,
            None,
        )
        for k in range(3)
    ]
    stored = store.record_inspections(
        engine, inspections=items, alert_topic=topics.alerts, build_message=lambda a, i: alert_message(a, i, topics)
    )
    ids = [inspection.id for inspection, _ in stored]
    assert None not in ids and len(set(ids)) == 3
    assert [alert.inspection_id for _, alert in stored if alert] == ids[1:]
    engine.dispose()
