"""Durable alert delivery: the outbox table → MQTT with QoS 1, and, while the database is away,
the alerts waiting in the local spool.

A message is marked sent only when the broker acknowledges it (PUBACK). While the broker is
down, messages wait in the outbox (or the spool); after an outage or a process kill, everything
pending is sent on the next connection. The spool is read whatever the database does: an NG
alert never waits for the database. Consumers de-duplicate by ``event_id`` (QoS 1 is at-least-once).
The retained ``status`` topic says ``online`` on connect and ``offline`` by last will.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy.engine import Engine

from appliance.alerts.schema import Topics
from appliance.storage import store
from appliance.storage.spool import Spool

log = logging.getLogger(__name__)
PAGE = 100  # messages read from the outbox (and from the spool) at a time
RESEND_AFTER = 120.0  # seconds connected without the broker acknowledging a message: it is read again
REFUSED_RETRY = 30.0  # seconds before a message the broker refused is sent again
UNRECORDED = "recording acknowledged messages failed; the spool remembers them until the database answers"


@dataclass
class BrokerSettings:
    host: str = "127.0.0.1"
    port: int = 1883
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None
    protocol: str = "auto"  # "auto" (MQTT 5 where the broker speaks it, else 3.1.1), "5" or "3.1.1"
    client_id: str = ""
    keepalive: int = 30


def speaks_mqtt5(settings: BrokerSettings, timeout: float = 3.0) -> bool:
    """Try an MQTT 5 connection; brokers that only speak 3.1.1 refuse or drop it."""
    answered, accepted = threading.Event(), []
    probe = new_client(settings, "", mqtt.MQTTv5)

    def on_connect(client, userdata, flags, reason_code, properties):
        accepted.append(not reason_code.is_failure)
        answered.set()

    probe.on_connect = on_connect
    probe.on_disconnect = lambda *args: answered.set()
    try:
        probe.connect(settings.host, settings.port, keepalive=5)
    except OSError:
        return True  # broker unreachable now: keep MQTT 5 and let reconnects find out
    probe.loop_start()
    answered.wait(timeout)
    probe.disconnect()
    probe.loop_stop()
    return bool(accepted and accepted[0])


def new_client(settings: BrokerSettings, client_id: str, protocol: int) -> mqtt.Client:
    """A paho client (callback API 2) with the settings' credentials and TLS."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol)
    if settings.username:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(ca_certs=settings.ca_file)
    client.reconnect_delay_set(min_delay=0.2, max_delay=5)
    return client


def protocol_for(settings: BrokerSettings) -> int:
    """MQTT 5 where the broker speaks it (``auto``), or what the settings say."""
    v5 = settings.protocol == "5" or (settings.protocol == "auto" and speaks_mqtt5(settings))
    return mqtt.MQTTv5 if v5 else mqtt.MQTTv311


def make_client(settings: BrokerSettings, topics: Topics) -> mqtt.Client:
    client = new_client(settings, settings.client_id or f"{topics.appliance_id}-alerts", protocol_for(settings))
    client.will_set(topics.status, "offline", qos=1, retain=True)
    return client


class Doorbell:
    """The sender thread's wake-up. ``set()`` says new messages wait (the outbox or spool is read
    again); ``ring()`` only wakes the thread (an acknowledgement to record needs no query)."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.work = True  # read the outbox on the first pass

    def set(self) -> None:
        self.work = True
        self.event.set()

    def ring(self) -> None:
        self.event.set()

    def wait(self, timeout: float) -> None:
        self.event.wait(timeout)
        self.event.clear()


class Flight(NamedTuple):
    """A message handed to paho and not yet acknowledged."""

    where: str  # "outbox" or "spool"
    row_id: int  # its id there
    topic: str
    payload: str
    event_id: str
    sent_at: float  # monotonic


class AlertPublisher:
    """Sends pending outbox messages whenever connected; runs in its own thread.

    The outbox is read when new messages are announced (``wake.set()``), when the last read filled
    a page, after a reconnect, and otherwise every ``recheck`` seconds as a safety net (messages a
    database failure left pending); an acknowledgement alone never costs a query.

    A message handed to paho stays in flight until the broker acknowledges it, across a dropped
    connection too: paho sends it again on reconnecting, so it is not read again here (it would
    go out twice). One that no acknowledgement followed for ``RESEND_AFTER`` seconds of connection
    is read again.

    paho calls ``on_publish`` while holding its own message lock, so the callbacks never wait
    for anything: they only queue events (acknowledged mid, disconnected). The sender thread alone
    owns the in-flight map and writes to the database.
    """

    def __init__(
        self,
        engine: Engine,
        settings: BrokerSettings,
        topics: Topics,
        poll: float = 0.1,
        recheck: float = 1.0,
        on_sent: Callable[[str], None] | None = None,
        spool: Spool | None = None,
    ) -> None:
        self.engine, self.settings, self.topics, self.poll, self.on_sent = engine, settings, topics, poll, on_sent
        self.recheck = recheck
        self.spool = spool
        self.client = make_client(settings, topics)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.connected = threading.Event()
        self.stopping = threading.Event()
        self.events: queue.SimpleQueue[tuple[str, int, str]] = queue.SimpleQueue()  # (kind, mid, reason)
        self.wake = Doorbell()  # set() when new messages are in the outbox or spool
        self._last_summary = 0.0
        self.inflight: dict[int, Flight] = {}  # paho mid → the message; the sender thread's only
        self.refused = 0  # messages the broker refused (its access rules, a payload too large)
        # refused event id → (when to send it again (monotonic), its spool row or None)
        self._held_back: dict[str, tuple[float, int | None]] = {}
        self._refusals_said: set[str] = set()
        self._connected_at = 0.0  # monotonic time of the last connection
        self._outbox_retry_at = 0.0  # while the database fails, the outbox is polled once a second
        self.sent = 0
        self.outbox_failing = False  # the database did not answer the last outbox poll
        self.thread = threading.Thread(target=self._run, name="alert-publisher", daemon=True)

    def start(self) -> AlertPublisher:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=self.settings.keepalive)
        self.client.loop_start()
        self.thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop sending, say ``offline`` (retained) and disconnect."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)
        if self.connected.is_set():
            self.client.publish(self.topics.status, "offline", qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    def publish_inspection(self, summary: dict, limit_per_second: float) -> bool:
        """Best effort (QoS 0, not durable): a summary on ``…/inspections``, at most
        ``limit_per_second`` a second; returns whether it was sent."""
        now = time.monotonic()
        if not self.connected.is_set() or now - self._last_summary < 1.0 / limit_per_second:
            return False
        self._last_summary = now
        self.client.publish(self.topics.inspections, store.encode(summary), qos=0)
        return True

    # -- paho callbacks (network thread): queue, never block ------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            if str(reason_code) not in self._refusals_said:  # once per reason, not at every retry
                self._refusals_said.add(str(reason_code))
                log.warning("broker refused the connection: %s (retrying every few seconds)", reason_code)
            return
        self._refusals_said.clear()
        client.publish(self.topics.status, "online", qos=1, retain=True)
        self._connected_at = time.monotonic()
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected.clear()
        self.events.put(("disconnected", 0, ""))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.events.put(("refused", mid, str(reason_code)) if reason_code.is_failure else ("acked", mid, ""))
        self.wake.ring()  # record the acknowledgement now, not at the next poll

    # -- sender thread --------------------------------------------------------------------
    def _drain_events(self) -> None:
        acked = []
        while True:
            try:
                kind, mid, reason = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == "disconnected":
                self.wake.work = True  # what is in flight paho sends again; the rest is read after reconnecting
            elif kind == "acked" and mid in self.inflight:
                acked.append(self.inflight.pop(mid))
            elif mid in self.inflight:  # refused by the broker: sent again after a while
                self._refused(self.inflight.pop(mid), reason)
        if self.connected.is_set():  # sent, or sent again on reconnecting, so long ago: lost somewhere
            since = time.monotonic() - RESEND_AFTER
            for mid in [mid for mid, f in self.inflight.items() if max(f.sent_at, self._connected_at) < since]:
                log.warning("no acknowledgement for alert %s: sending it again", self.inflight.pop(mid).event_id)
        if not acked:
            return
        self.sent += len(acked)
        record = [f.event_id for f in acked if f.where == "outbox"]
        spooled = {f.row_id: f.event_id for f in acked if f.where == "spool"}
        if spooled:  # local: always recorded, whatever the database does; items written back meanwhile are
            gone = self.spool.mark_published(list(spooled))  # the database's to record
            record += [spooled[row_id] for row_id in gone]
        for f in acked if self.on_sent else ():
            try:
                self.on_sent(f.payload)
            except Exception:  # a metrics hook must never hold up delivery
                log.exception("on_sent hook failed")
        if record:
            try:
                store.mark_events_sent(self.engine, event_ids=set(record))
            except Exception:  # the spool remembers them until the database answers; without one they stay pending
                if self.spool is not None:
                    self.spool.remember_sent(record)
                raise

    def _refused(self, flight: Flight, reason: str) -> None:
        """Kept pending and sent again after ``REFUSED_RETRY`` seconds; said once per reason."""
        self.refused += 1
        row = flight.row_id if flight.where == "spool" else None
        self._held_back[flight.event_id] = (time.monotonic() + REFUSED_RETRY, row)
        if reason not in self._refusals_said:
            self._refusals_said.add(reason)
            log.warning(
                "the broker refused the message on %s (%s): %s; it stays pending and is sent again every %g s "
                "(do the broker's access rules let this client publish there?)",
                flight.topic,
                flight.event_id,
                reason,
                REFUSED_RETRY,
            )

    def _pending(self) -> list[tuple[str, int, str, str, int, bool, str]]:
        """What to send next: the spool's unpublished alerts (local, always readable) and the
        outbox's pending messages (skipped for a second after the database failed), as
        (where, id, topic, payload, qos, retain, event id); none in flight, none twice, none
        from the outbox that an item in the spool holds (sent from there)."""
        out = []
        now = time.monotonic()
        self._held_back = {e: held for e, held in self._held_back.items() if held[0] > now}
        skip = {f.event_id for f in self.inflight.values()} | set(self._held_back)
        if self.spool is not None:
            busy = {f.row_id for f in self.inflight.values() if f.where == "spool"}
            busy |= {row for _, row in self._held_back.values() if row is not None}
            spooled = self.spool.unpublished(PAGE, busy)
            out += [("spool", i, topic, payload, 1, False, event) for i, topic, payload, event in spooled]
            skip |= {event for *_, event in spooled}
        if time.monotonic() < self._outbox_retry_at:
            return out
        try:
            if self.spool is not None:  # acknowledged while the database was away: recorded now
                remembered = self.spool.remembered(PAGE)
                store.mark_events_sent(self.engine, event_ids=set(remembered))
                self.spool.forget_sent(remembered)
            for _ in range(3):  # alerts the spool holds are sent from there; skip them and read on
                pending = store.pending_messages(self.engine, topic_prefix=self.topics.own, limit=PAGE, skip=skip)
                held = self.spool.holding({m.event_id for m in pending}) if self.spool is not None else set()
                if not held:
                    break
                skip |= held
            pending = [m for m in pending if m.event_id not in skip]
        except Exception:  # database briefly unavailable: try again, say so once per outage
            if not self.outbox_failing:
                log.exception("outbox access failed; retrying every second until the database answers")
            self.outbox_failing = True
            self._outbox_retry_at = time.monotonic() + 1.0
            return out
        if self.outbox_failing:
            log.warning("outbox reachable again")
            self.outbox_failing = False
        return out + [("outbox", m.id, m.topic, m.payload, m.qos, m.retain, m.event_id) for m in pending]

    def _run(self) -> None:
        next_check = 0.0
        while not self.stopping.is_set():
            try:
                self._drain_events()
            except Exception:  # acknowledgements the database could not record
                log.exception(UNRECORDED)
            if not self.connected.wait(self.poll):
                continue
            if self.wake.work or time.monotonic() >= next_check:
                self.wake.work = False
                next_check = time.monotonic() + self.recheck
                pending = self._pending()
                for where, row_id, topic, payload, qos, retain, event_id in pending:
                    if not self.connected.is_set():
                        self.wake.work = True
                        break
                    info = self.client.publish(topic, payload, qos=qos, retain=retain)
                    # without a connection paho keeps the message and sends it on reconnecting
                    if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                        self.inflight[info.mid] = Flight(where, row_id, topic, payload, event_id, time.monotonic())
                if len(pending) >= PAGE:
                    self.wake.work = True  # more waiting: read the next page at once
                    continue
            self.wake.wait(self.poll)
        try:
            self._drain_events()
        except Exception:
            log.exception(UNRECORDED)
