"""The OPC UA face for a PLC, through asyncua's own client against the running appliance: browse
the vision system, read its state, switch a source's recipe, trigger a capture and read the
result it caused; anonymous only on loopback, a user and password otherwise."""

from __future__ import annotations

import asyncio

import pytest
from asyncua import Client, ua

from appliance.opcua import NAMESPACE
from appliance.settings import SettingsError, load_settings
from tests.helpers.appliance import running_appliance
from tests.helpers.broker import free_port


async def child(node, *path: str, ns: int):
    return await node.get_child([f"{ns}:{p}" for p in path])


async def plc_session(endpoint: str, source_node: str, other_version: str) -> dict:
    """What a PLC does: browse, read, switch the recipe, trigger, read the result."""
    async with Client(endpoint, timeout=10) as client:
        ns = await client.get_namespace_index(NAMESPACE)
        system = await child(client.nodes.objects, "VisionSystem", ns=ns)
        names = {(await n.read_browse_name()).Name for n in await system.get_children()}
        sources = await child(system, "Sources", ns=ns)
        source = await child(sources, source_node, ns=ns)
        machine = await child(system, "VisionStateMachine", ns=ns)
        for _ in range(50):  # the state follows the line within an update
            state = await (await child(machine, "CurrentState", ns=ns)).read_value()
            state = f"{state} {await (await child(machine, 'Reason', ns=ns)).read_value()}".strip()
            if state == "Operational":
                break
            await asyncio.sleep(0.1)
        recipe_list = await child(system, "RecipeManagement", "Recipes", ns=ns)
        for _ in range(50):  # the list follows the registry within STATUS_EVERY_S
            recipes = await recipe_list.read_value()
            if other_version in recipes:
                break
            await asyncio.sleep(0.1)
        switched = await source.call_method(f"{ns}:SelectRecipe", other_version)
        with pytest.raises(ua.UaStatusCodeError) as refused:
            await source.call_method(f"{ns}:SelectRecipe", "no-such-version")
        await asyncio.sleep(0.5)  # the next update writes LastError
        last_error = await (await child(source, "LastError", ns=ns)).read_value()
        decision, score, inspection_id = await source.call_method(f"{ns}:Trigger")
        result_node = await child(source, "Result", ns=ns)

        async def result() -> dict:
            return {(await n.read_browse_name()).Name: await n.read_value() for n in await result_node.get_children()}

        for _ in range(50):  # the result node follows within an update or two
            got = await result()
            if got["InspectionId"] >= inspection_id:
                break
            await asyncio.sleep(0.1)
        times = {
            (await n.read_browse_name()).Name: await n.read_value()
            for n in await (await child(source, "ProcessingTimes", ns=ns)).get_children()
        }
        active = await (await child(source, "ActiveRecipe", ns=ns)).read_value()
    return {
        "names": names,
        "state": state,
        "recipes": recipes,
        "switched": switched,
        "refused": refused.value,
        "last_error": last_error,
        "trigger": (decision, score, inspection_id),
        "result": got,
        "times": times,
        "active": active,
    }


def test_a_plc_browses_switches_a_recipe_triggers_and_reads_the_result(tmp_path):
    port = free_port()
    source = "synth:line?size=64&fps=20&defect_rate=0.3&seed=5"
    with running_appliance(tmp_path, "sqlite", source, min_scored=5, opcua={"enabled": True, "port": port}) as r:
        app, client, tokens, _, _ = r
        second = app.register(app.train_default())  # a second recipe to switch to
        endpoint = f"opc.tcp://127.0.0.1:{port}/appliance/"
        got = asyncio.run(plc_session(endpoint, source.replace("/", "_"), second))
        assert {"Identification", "VisionStateMachine", "RecipeManagement", "Sources"} <= got["names"]
        assert got["state"] == "Operational"
        assert second in got["recipes"]
        assert got["switched"][0] == second and got["switched"][1] <= got["switched"][2]
        assert got["refused"].code == ua.StatusCodes.BadNotFound and "no-such-version" in got["last_error"]
        assert app.recipes.get(source).version == second
        decision, score, inspection_id = got["trigger"]
        stored = client.get(f"/inspections/{inspection_id}", headers={"Authorization": f"Bearer {tokens['viewer']}"})
        assert stored.status_code == 200, stored.text
        assert stored.json()["decision"] == decision and stored.json()["score"] == pytest.approx(score)
        assert stored.json()["model_version"] == second
        assert got["result"]["InspectionId"] >= inspection_id and got["result"]["ModelVersion"] == second
        assert got["times"]["P99Ms"] > 0
        audit = client.get("/audit", headers={"Authorization": f"Bearer {tokens['engineer']}"}).json()
        assert any(a["action"] == "bind_model" and a["actor"] == "PLC over OPC UA" for a in audit)


async def connect(endpoint: str, user: str | None = None, password: str | None = None) -> str:
    client = Client(endpoint, timeout=5)
    if user is not None:
        client.set_user(user)
        client.set_password(password)
    async with client:
        ns = await client.get_namespace_index(NAMESPACE)
        return await (
            await child(client.nodes.objects, "VisionSystem", "Identification", "ApplianceId", ns=ns)
        ).read_value()


def test_a_user_and_password_are_required_when_set_and_anonymous_is_loopback_only(tmp_path):
    port = free_port()
    opcua = {"enabled": True, "port": port, "username": "plc", "password": "line-3-opcua-7f2c"}
    with running_appliance(tmp_path, "sqlite", "synth:line?size=64&fps=10", min_scored=1, opcua=opcua):
        endpoint = f"opc.tcp://127.0.0.1:{port}/appliance/"
        assert asyncio.run(connect(endpoint, "plc", "line-3-opcua-7f2c")) == "api"
        for user, password in ((None, None), ("plc", "wrong"), ("other", "line-3-opcua-7f2c")):
            with pytest.raises(Exception):  # noqa: B017, PT011 - asyncua raises its own kinds for each refusal
                asyncio.run(connect(endpoint, user, password))
    with pytest.raises(SettingsError, match="anonymous access is for loopback only"):
        load_settings(opcua={"enabled": True, "host": "0.0.0.0"})
    production = {
        "production": True,
        "database_url": "postgresql+psycopg://app:s3cr3t-db@db/appliance",
        "mqtt": {"host": "broker", "username": "app", "password": "mq-9f8e7d"},
    }
    with pytest.raises(SettingsError, match="opcua.password"):
        load_settings(**production, opcua={"enabled": True, "username": "plc", "password": "changeme"})
    with pytest.raises(SettingsError, match="opcua.certificate"):
        load_settings(
            **production, opcua={"enabled": True, "host": "10.0.0.5", "username": "plc", "password": "x7-f00"}
        )


async def certificates(folder, app_uri: str, name: str) -> tuple[str, str]:
    """A self-signed application certificate (DER) and its key (PEM), as an integrator makes them."""
    from asyncua.crypto.cert_gen import setup_self_signed_certificate
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key, cert = folder / f"{name}-key.pem", folder / f"{name}-cert.der"
    uses = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
    await setup_self_signed_certificate(key, cert, app_uri, "127.0.0.1", uses, {"commonName": name})
    return str(cert), str(key)


def test_off_loopback_only_signed_and_encrypted_endpoints_with_a_user_are_offered(tmp_path):
    """Listening on every interface with a certificate: a plain connection finds no endpoint, a
    signed-and-encrypted one with the user's password reads the vision system."""
    port = free_port()
    server_cert, server_key = asyncio.run(certificates(tmp_path, "urn:anomaly-appliance:api", "appliance"))
    opcua = {
        "enabled": True, "host": "0.0.0.0", "port": port, "username": "plc", "password": "line-3-opcua-7f2c",
        "certificate": server_cert, "private_key": server_key,
    }  # fmt: skip
    with running_appliance(tmp_path, "sqlite", "synth:line?size=64&fps=10", min_scored=1, opcua=opcua):
        endpoint = f"opc.tcp://127.0.0.1:{port}/appliance/"

        async def secure() -> str:
            client = Client(endpoint, timeout=10)
            client.application_uri = "urn:plc-3:client"
            cert, key = await certificates(tmp_path, client.application_uri, "plc")
            await client.set_security_string(f"Basic256Sha256,SignAndEncrypt,{cert},{key}")
            client.set_user("plc")
            client.set_password("line-3-opcua-7f2c")
            async with client:
                ns = await client.get_namespace_index(NAMESPACE)
                path = ("VisionSystem", "Identification", "ApplianceId")
                return await (await child(client.nodes.objects, *path, ns=ns)).read_value()

        assert asyncio.run(secure()) == "api"
        with pytest.raises(ua.UaError, match="No matching endpoints"):  # no plain endpoint off loopback
            asyncio.run(connect(endpoint, "plc", "line-3-opcua-7f2c"))
