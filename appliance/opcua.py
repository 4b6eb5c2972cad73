"""An OPC UA server for PLCs and SCADA: the essentials of OPC 40100-1 (VDMA 40100-1) Machine
Vision that a simple inline vision system needs, built with asyncua (the ``opcua`` extra).

Address space (namespace ``urn:anomaly-appliance:machine-vision``), under ``Objects``::

    VisionSystem
      Identification        ApplianceId, Site, Line, SoftwareVersion
      VisionStateMachine    CurrentState ("Preoperational" | "Operational" | "Error"), Reason
      RecipeManagement      Recipes (registered model versions), DefaultRecipe
      Sources
        <source>            SourceId, Mode (teach | inspecting), State (online, failed, ...),
                            ActiveRecipe, T1, T2, LastError
                            SelectRecipe(ModelVersion) -> (ModelVersion, T1, T2)
                            Trigger() -> (Decision, Score, InspectionId)
          Result            Decision, Score, NormScore, DefectType, ModelVersion, Time,
                            InspectionId, Item
          ProcessingTimes   LastMs, P50Ms, P99Ms (capture to decision)
          Counters          Scored, Ok, Review, Ng

The state machine follows the companion specification's top level: ``Preoperational`` while no
source is judged by a model (teach mode, first training), ``Error`` while the database is away or
a source failed, ``Operational`` otherwise. This is not the specification's full information
model (its NodeSet, result handles and sub-state machines): it uses the specification's names for
the parts it offers, in its own namespace.

A method that fails answers with a Bad status code (``BadNotFound``: no such source or version;
``BadInvalidState``: teach mode, no frame in time; ``BadInvalidArgument``) and the reason in the
source's ``LastError``. Recipe switches are audited as "PLC over OPC UA".

Security: anonymous only on loopback (the settings refuse it elsewhere); otherwise a username and
password, checked in constant time; with a certificate and private key the endpoints are signed
and encrypted (Basic256Sha256, Aes256Sha256RsaPss) and, off loopback, only those are offered.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import threading
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from appliance.alerts.schema import topic_safe
from appliance.errors import Conflict, NotFound, Unavailable
from appliance.settings import LOOPBACK, OpcUaSettings
from appliance.storage import queries

if TYPE_CHECKING:
    from appliance.runtime import Appliance

log = logging.getLogger(__name__)

NAMESPACE = "urn:anomaly-appliance:machine-vision"
NO_TIME = dt.datetime(1601, 1, 1, tzinfo=dt.UTC)  # OPC UA's "no time"
STATUS_EVERY_S = 2.0  # the database check and the recipe list, at most this often


def _software_version() -> str:
    try:
        return version("anomaly-appliance")
    except PackageNotFoundError:
        return "dev"


class OpcUaServer:
    """The server in its own thread and event loop, following the appliance every ``update_s``."""

    def __init__(self, appliance: Appliance, settings: OpcUaSettings) -> None:
        try:
            import asyncua  # noqa: F401
        except ImportError as exc:
            msg = "OPC UA needs the 'opcua' extra: pip install 'anomaly-appliance[opcua]'"
            raise RuntimeError(msg) from exc
        self.appliance, self.settings = appliance, settings
        self.endpoint = f"opc.tcp://{settings.host}:{settings.port}/appliance/"
        self.ready, self.stopping = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._thread, name="opcua", daemon=True)
        self.sources: dict[str, dict[str, Any]] = {}  # source id -> its nodes
        self._status_at = -1e9
        self._state = ("Preoperational", "starting")
        self._problem: str | None = None  # the database's, from the last check
        self._lock = threading.Lock()
        self._pending_errors: list[tuple[Any, str]] = []  # (LastError node, text) set by methods

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> OpcUaServer:
        self.thread.start()
        if not self.ready.wait(timeout) or self.error is not None:
            msg = f"the OPC UA server did not start on {self.endpoint}: {self.error or 'timed out'}"
            raise RuntimeError(msg)
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(15)

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # said by start(); the appliance runs on without OPC UA
            self.error = exc
            log.exception("the OPC UA server stopped")
            self.ready.set()

    async def _main(self) -> None:
        from asyncua import Server, ua

        server = Server(user_manager=_Users(self.settings))
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"Anomaly appliance {self.appliance.settings.mqtt.appliance_id}")
        await server.set_application_uri(f"urn:anomaly-appliance:{self.appliance.settings.mqtt.appliance_id}")
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.settings.certificate is not None:
            await server.load_certificate(str(self.settings.certificate))
            await server.load_private_key(str(self.settings.private_key))
            secure = [
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                ua.SecurityPolicyType.Aes256Sha256RsaPss_SignAndEncrypt,
            ]
            policies = secure if self.settings.host not in LOOPBACK else [*policies, *secure]
        server.set_security_policy(policies)
        tokens = [ua.UserNameIdentityToken] if self.settings.username else [ua.AnonymousIdentityToken]
        server.set_identity_tokens(tokens)
        self.ns = await server.register_namespace(NAMESPACE)
        await self._build(server)
        async with server:
            self.ready.set()
            while not self.stopping.is_set():
                try:
                    await self._update()
                except Exception:  # a bad moment (a source removed mid-update): next time
                    log.exception("OPC UA update failed")
                await asyncio.sleep(self.settings.update_s)

    # -- address space -----------------------------------------------------------------------------
    async def _variable(self, parent: Any, name: str, value: Any, variant: Any = None) -> Any:
        from asyncua import ua

        return await parent.add_variable(self.ns, name, value if variant is None else ua.Variant(value, variant))

    async def _build(self, server: Any) -> None:
        from asyncua import ua

        s = self.appliance.settings.mqtt
        objects = server.nodes.objects
        system = await objects.add_object(self.ns, "VisionSystem")
        ident = await system.add_object(self.ns, "Identification")
        for name, value in (
            ("ApplianceId", s.appliance_id),
            ("Site", s.site),
            ("Line", s.line),
            ("SoftwareVersion", _software_version()),
        ):
            await self._variable(ident, name, value)
        machine = await system.add_object(self.ns, "VisionStateMachine")
        self.current_state = await self._variable(machine, "CurrentState", "Preoperational")
        self.state_reason = await self._variable(machine, "Reason", "starting")
        recipes = await system.add_object(self.ns, "RecipeManagement")
        self.recipe_list = await self._variable(recipes, "Recipes", [], ua.VariantType.String)
        self.default_recipe = await self._variable(recipes, "DefaultRecipe", "")
        self.sources_folder = await system.add_folder(self.ns, "Sources")

    async def _add_source(self, source_id: str) -> dict[str, Any]:
        from asyncua import ua
        from asyncua.common.methods import uamethod

        obj = await self.sources_folder.add_object(self.ns, topic_safe(source_id))
        nodes: dict[str, Any] = {"object": obj}
        for name, value, kind in (
            ("SourceId", source_id, None),
            ("Mode", "", None),
            ("State", "", None),
            ("ActiveRecipe", "", None),
            ("T1", 0.0, ua.VariantType.Double),
            ("T2", 0.0, ua.VariantType.Double),
            ("LastError", "", None),
        ):
            nodes[name] = await self._variable(obj, name, value, kind)
        result = await obj.add_object(self.ns, "Result")
        for name, value, kind in (
            ("Decision", "", None),
            ("Score", 0.0, ua.VariantType.Double),
            ("NormScore", 0.0, ua.VariantType.Double),
            ("DefectType", "", None),
            ("ModelVersion", "", None),
            ("Time", NO_TIME, ua.VariantType.DateTime),
            ("InspectionId", 0, ua.VariantType.Int64),
            ("Item", "", None),
        ):
            nodes[f"Result.{name}"] = await self._variable(result, name, value, kind)
        times = await obj.add_object(self.ns, "ProcessingTimes")
        for name in ("LastMs", "P50Ms", "P99Ms"):
            nodes[f"Times.{name}"] = await self._variable(times, name, 0.0, ua.VariantType.Double)
        counters = await obj.add_object(self.ns, "Counters")
        for name in ("Scored", "Ok", "Review", "Ng"):
            nodes[f"Counters.{name}"] = await self._variable(counters, name, 0, ua.VariantType.Int64)

        def argument(name: str, kind: Any, what: str) -> Any:
            arg = ua.Argument()
            arg.Name, arg.DataType, arg.ValueRank = name, ua.NodeId(kind), -1
            arg.Description = ua.LocalizedText(what)
            return arg

        errors = nodes["LastError"]

        @uamethod
        def select_recipe(parent: Any, model_version: str) -> Any:
            out = self._call(errors, lambda: self.appliance.switch_recipe(source_id, model_version, "PLC over OPC UA"))
            if isinstance(out, ua.StatusCode):
                return out
            return out["model_version"], float(out["t1"]), float(out["t2"])

        @uamethod
        def trigger(parent: Any) -> Any:
            out = self._call(errors, lambda: self.appliance.pipeline.capture_and_inspect(source_id))
            if isinstance(out, ua.StatusCode):
                return out
            inspection = ua.Variant(int(out["inspection_id"] or 0), ua.VariantType.Int64)
            return out["decision"], float(out["score"]), inspection

        string, double, int64 = ua.ObjectIds.String, ua.ObjectIds.Double, ua.ObjectIds.Int64
        nodes["SelectRecipe"] = await obj.add_method(
            self.ns,
            "SelectRecipe",
            select_recipe,
            [argument("ModelVersion", string, "a registered model version")],
            [
                argument("ModelVersion", string, "the version now judging the source"),
                argument("T1", double, "review threshold"),
                argument("T2", double, "NG threshold"),
            ],
        )
        nodes["Trigger"] = await obj.add_method(
            self.ns,
            "Trigger",
            trigger,
            [],
            [
                argument("Decision", string, "ok, review or ng"),
                argument("Score", double, "raw anomaly score"),
                argument("InspectionId", int64, "the stored inspection (0 while the database is away)"),
            ],
        )
        return nodes

    def _call(self, errors: Any, action: Callable[[], dict[str, Any]]) -> Any:
        """Run a method's action (in asyncua's worker thread); a refusal becomes a Bad status
        code, its reason the source's LastError."""
        from asyncua import ua

        try:
            out = action()
        except NotFound as exc:
            code, reason = ua.StatusCodes.BadNotFound, str(exc)
        except (Unavailable, Conflict) as exc:
            code, reason = ua.StatusCodes.BadInvalidState, str(exc)
        except ValueError as exc:  # e.g. a bundle that cannot judge this source
            code, reason = ua.StatusCodes.BadInvalidArgument, str(exc)
        else:
            self._set_soon(errors, "")
            return out
        log.warning("OPC UA method refused: %s", reason)
        self._set_soon(errors, reason)
        return ua.StatusCode(code)

    def _set_soon(self, node: Any, value: str) -> None:
        """Written by the next update, in the server's loop (methods run in worker threads)."""
        with self._lock:
            self._pending_errors.append((node, value))

    # -- following the line --------------------------------------------------------------------------
    async def _update(self) -> None:
        from asyncua import ua

        app = self.appliance
        pipeline = app.pipeline
        status = pipeline.status()
        for source_id in [sid for sid in self.sources if sid not in status]:  # removed
            await self.sources.pop(source_id)["object"].delete()
        for source_id, st in status.items():
            nodes = self.sources.get(source_id)
            if nodes is None:
                nodes = self.sources[source_id] = await self._add_source(source_id)
            values: dict[str, Any] = {
                "Mode": st["mode"],
                "State": str(st.get("state", "")),
                "ActiveRecipe": st["model_version"] or "",
                "T1": float(st["t1"] or 0.0),
                "T2": float(st["t2"] or 0.0),
                "Times.P50Ms": float(st["capture_to_decision_ms"]["p50"]),
                "Times.P99Ms": float(st["capture_to_decision_ms"]["p99"]),
                "Counters.Scored": ua.Variant(int(st["scored"]), ua.VariantType.Int64),
                **{
                    f"Counters.{k.title()}": ua.Variant(int(v), ua.VariantType.Int64)
                    for k, v in st["decisions"].items()
                },
            }
            last = pipeline.last_result.get(source_id)
            if last is not None:
                values |= {
                    "Result.Decision": last.decision,
                    "Result.Score": float(last.score),
                    "Result.NormScore": float(last.norm_score),
                    "Result.DefectType": last.label or "",
                    "Result.ModelVersion": last.model_version,
                    "Result.Time": ua.Variant(last.t_capture, ua.VariantType.DateTime),
                    "Result.InspectionId": ua.Variant(int(last.id or 0), ua.VariantType.Int64),
                    "Result.Item": last.item or "",
                    "Times.LastMs": float(last.latency_ms),
                }
            for name, value in values.items():
                await nodes[name].write_value(value)
        with self._lock:
            pending, self._pending_errors = self._pending_errors, []
        for node, value in pending:
            await node.write_value(value)
        await self._update_state(status)

    async def _update_state(self, status: dict[str, dict[str, Any]]) -> None:
        """The state machine's state, every update; the database check and the recipe list
        every ``STATUS_EVERY_S``."""
        from asyncua import ua

        loop = asyncio.get_running_loop()
        if loop.time() - self._status_at >= STATUS_EVERY_S:
            self._status_at = loop.time()
            engine = self.appliance.engine
            self._problem = await loop.run_in_executor(None, queries.database_problem, engine)
            if self._problem is None:
                models = await loop.run_in_executor(None, queries.models, engine)
                recipes = [m.version for m in models if m.status != "retired"]
                await self.recipe_list.write_value(ua.Variant(recipes, ua.VariantType.String))
        default = self.appliance.recipes.default
        await self.default_recipe.write_value(default.version if default else "")
        failed = sorted(sid for sid, st in status.items() if st.get("state") == "failed")
        if self._problem:
            state = ("Error", self._problem)
        elif failed:
            state = ("Error", f"source failed: {', '.join(failed)}")
        elif (self.appliance.first_training or {}).get("state") == "training":
            state = ("Preoperational", "training the first model")
        elif not any(st["mode"] == "inspecting" for st in status.values()):
            state = ("Preoperational", "no source is judged by a model (teach mode)")
        else:
            state = ("Operational", "")
        if state != self._state:
            await self.current_state.write_value(state[0])
            await self.state_reason.write_value(state[1])
            self._state = state


class _Users:
    """Anonymous where no username is set (loopback only: the settings see to it); otherwise
    the one configured user, its password compared in constant time."""

    def __init__(self, settings: OpcUaSettings) -> None:
        self.username, self.password = settings.username, settings.password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None):
        from asyncua.crypto.permission_rules import User, UserRole

        if self.username is None:
            return User(role=UserRole.User)
        if username is None or password is None:
            return None
        same_user = hmac.compare_digest(username.encode(), self.username.encode())
        same_password = hmac.compare_digest(password.encode(), (self.password or "").encode())
        return User(role=UserRole.User, name=username) if same_user and same_password else None
