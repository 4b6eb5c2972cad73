"""External trigger: the PLC handshake in MQTT form.

The PLC publishes ``{"request_id": "...", "source_id": "..."}`` to ``…/cmd/trigger``. The appliance
answers on ``…/trigger/response`` with ``{"request_id", "state": "ready"}``, captures and inspects
one frame of that source, answers ``{"request_id", "state": "result", "decision", "score",
"inspection_id"}``, and waits for the PLC's ``{"request_id"}`` on ``…/cmd/trigger/ack`` (logged).
A bad request gets ``{"request_id", "state": "error", "error": "..."}``. The subscription is made
in ``on_connect``, so a reconnect resubscribes.

Recipe switch (the "sub-configuration" signal): ``{"request_id", "source_id", "model_version"}``
on ``…/cmd/recipe`` binds that registered model to the source (audited, as a promotion through the
API); the next frame is judged by it. The answer on ``…/recipe/response`` is ``{"request_id",
"state": "result", "source_id", "model_version", "t1", "t2"}`` or an error.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from appliance.alerts.publisher import BrokerSettings, new_client, protocol_for
from appliance.alerts.schema import Topics
from appliance.errors import NotFound, Unavailable

log = logging.getLogger(__name__)


class TriggerListener:
    def __init__(
        self,
        settings: BrokerSettings,
        topics: Topics,
        inspect_one: Callable[[str], dict[str, Any]],
        switch_recipe: Callable[[str, str], dict[str, Any]] | None = None,
    ) -> None:
        self.topics, self.inspect_one, self.switch_recipe = topics, inspect_one, switch_recipe
        self.client = new_client(settings, f"{topics.appliance_id}-trigger", protocol_for(settings))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.settings = settings
        self.acks: list[str] = []

    @property
    def response_topic(self) -> str:
        return f"{self.topics.base}/trigger/response"

    def start(self) -> TriggerListener:
        self.client.connect_async(self.settings.host, self.settings.port, keepalive=30)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.subscribe([(self.topics.trigger, 1), (f"{self.topics.trigger}/ack", 1), (self.topics.recipe, 1)])

    def _on_message(self, client, userdata, message) -> None:
        try:
            request = json.loads(message.payload.decode("utf-8"))
            if not isinstance(request, dict) or not isinstance(request.get("request_id"), str):
                msg = "payload must be a JSON object with a string request_id"
                raise ValueError(msg)
        except (ValueError, UnicodeDecodeError) as exc:
            topic = self.recipe_response_topic if message.topic == self.topics.recipe else self.response_topic
            self._reply({"request_id": None, "state": "error", "error": f"bad message: {exc}"}, topic)
            return
        if message.topic == self.topics.recipe:
            threading.Thread(target=self._switch, args=(request,), daemon=True).start()
            return
        if message.topic.endswith("/ack"):
            self.acks.append(request["request_id"])
            log.info("trigger %s acknowledged by the PLC", request["request_id"])
            return
        # inspect outside the network thread: capture may take a frame time
        threading.Thread(target=self._handle, args=(request,), daemon=True).start()

    def _handle(self, request: dict[str, Any]) -> None:
        rid = request["request_id"]
        self._reply({"request_id": rid, "state": "ready"})
        try:
            result = self.inspect_one(str(request.get("source_id", "")))
        except (NotFound, Unavailable, ValueError) as exc:
            self._reply({"request_id": rid, "state": "error", "error": str(exc)})
            return
        self._reply({"request_id": rid, "state": "result", **result})

    @property
    def recipe_response_topic(self) -> str:
        return f"{self.topics.base}/recipe/response"

    def _switch(self, request: dict[str, Any]) -> None:
        rid, topic = request["request_id"], self.recipe_response_topic
        source_id, version = request.get("source_id"), request.get("model_version")
        if self.switch_recipe is None or not isinstance(source_id, str) or not isinstance(version, str):
            self._reply(
                {"request_id": rid, "state": "error", "error": "needs string source_id and model_version"}, topic
            )
            return
        try:
            result = self.switch_recipe(source_id, version)
        except (LookupError, Unavailable, ValueError) as exc:  # unknown source or model, a broken bundle
            self._reply({"request_id": rid, "state": "error", "error": str(exc)}, topic)
            return
        self._reply({"request_id": rid, "state": "result", **result}, topic)

    def _reply(self, payload: dict[str, Any], topic: str | None = None) -> None:
        self.client.publish(topic or self.response_topic, json.dumps(payload), qos=1)
