"""Every entrypoint, config path and port the deploy files name exists in the code."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

from appliance.cli import build_parser
from appliance.settings import MqttSettings, Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"


def test_compose_services_health_checks_and_required_secrets():
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"appliance", "appliance-2", "console", "mosquitto", "postgres"}
    assert all("healthcheck" in s for s in services.values())
    text = (DEPLOY / "compose.yml").read_text()
    for secret in ("POSTGRES_PASSWORD", "MQTT_PASSWORD"):
        assert f"${{{secret}:?" in text  # compose stops when a secret is missing
    assert services["appliance"]["ports"] == ["8000:8000"]
    # the second node (profile two-nodes): the same database and broker, its own id, data and port
    one, two = services["appliance"], services["appliance-2"]
    assert two["profiles"] == ["two-nodes"] and two["ports"] == ["8001:8000"]
    assert two["environment"]["APPLIANCE_DATABASE_URL"] == one["environment"]["APPLIANCE_DATABASE_URL"]
    assert two["environment"]["APPLIANCE_MQTT__HOST"] == one["environment"]["APPLIANCE_MQTT__HOST"]
    assert two["environment"]["APPLIANCE_MQTT__APPLIANCE_ID"] != one["environment"]["APPLIANCE_MQTT__APPLIANCE_ID"]
    assert two["volumes"][0].split(":")[0] != one["volumes"][0].split(":")[0]
    # the console reaches the API by its service name and serves on 8501, as `appliance console` takes it
    console = build_parser().parse_args(services["console"]["entrypoint"][1:])
    assert console.command == "console" and console.api_url == "http://appliance:8000" and console.port == 8501
    assert services["console"]["ports"] == ["8501:8501"]


def test_environment_variables_are_real_settings():
    compose = yaml.safe_load((DEPLOY / "compose.yml").read_text())
    env = [*compose["services"]["appliance"]["environment"], *compose["services"]["appliance-2"]["environment"]]
    dockerfile_env = re.findall(r"(APPLIANCE_[A-Z_]+)=", (DEPLOY / "Dockerfile").read_text())
    systemd_env = re.findall(r"(APPLIANCE_[A-Z_]+)=", (DEPLOY / "systemd" / "appliance.service").read_text())
    for name in [*env, *dockerfile_env, *systemd_env]:
        key = name.removeprefix("APPLIANCE_").lower()
        if "__" in key:
            group, field = key.split("__")
            assert group == "mqtt" and field in MqttSettings.model_fields, name
        else:
            assert key in Settings.model_fields, name


def test_entrypoints_exist():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["appliance"] == "appliance.cli:main"
    parser = build_parser()
    assert parser.parse_args(["run", "--config", "/etc/appliance/settings.yaml"]).command == "run"
    assert 'ENTRYPOINT ["appliance", "run"]' in (DEPLOY / "Dockerfile").read_text()
    assert (
        "appliance run --config /etc/appliance/settings.yaml" in (DEPLOY / "systemd" / "appliance.service").read_text()
    )
    for folder in re.findall(r"^COPY (\w+) \w+$", (DEPLOY / "Dockerfile").read_text(), re.M):
        assert (ROOT / folder).is_dir(), folder


def test_ports_and_paths_agree():
    assert Settings().api_port == 8000 and "EXPOSE 8000" in (DEPLOY / "Dockerfile").read_text()
    conf = (DEPLOY / "mosquitto" / "mosquitto.conf").read_text()
    assert "listener 8883" in conf and "password_file /mosquitto/config/passwd" in conf
    assert "acl_file /mosquitto/config/acl" in conf and (DEPLOY / "mosquitto" / "acl").is_file()
    compose = (DEPLOY / "compose.yml").read_text()
    for mounted in ("./mosquitto/mosquitto.conf", "./mosquitto/acl"):
        assert (DEPLOY / mounted).is_file()
    assert 'APPLIANCE_MQTT__PORT: "8883"' in compose


def test_example_settings_refuse_to_start_until_secrets_are_set(tmp_path):
    import pytest

    from appliance.settings import SettingsError, load_settings

    with pytest.raises(SettingsError, match="non-default 'mqtt.password'"):
        load_settings(DEPLOY / "settings.example.yaml")
    text = (DEPLOY / "settings.example.yaml").read_text().replace("password: CHANGE-ME", "password: s3cr3t-Tr4in")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(SettingsError, match="database_url"):
        load_settings(tmp_path / "s.yaml")
    (tmp_path / "s.yaml").write_text(text.replace("appliance:CHANGE-ME@", "appliance:Xq9-db-Pw@"))
    settings = load_settings(tmp_path / "s.yaml")
    assert settings.production and settings.mqtt.tls and settings.db_url.startswith("postgresql://")


def test_acl_topics_follow_the_topic_layout():
    from appliance.alerts.schema import Topics

    t = Topics("appliance", "s", "l", "a")
    acl = (DEPLOY / "mosquitto" / "acl").read_text()
    names = {"config/threshold": "threshold", "cmd/trigger": "trigger", "cmd/recipe": "recipe"}
    for suffix in ("alerts", "status", "inspections", "config/threshold", "cmd/trigger", "cmd/recipe"):
        assert f"appliance/+/+/+/{suffix}" in acl
        assert getattr(t, names.get(suffix, suffix)).endswith(suffix)
    assert t.source_threshold("cam").startswith(t.threshold + "/")  # covered by config/threshold/#
