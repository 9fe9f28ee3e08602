"""Provider registration: the entry point, the metadata Airflow reads, and `airflow providers list`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import airflow_provider_polyai
from airflow_provider_polyai.get_provider_info import get_provider_info
from airflow_provider_polyai.hooks.polyai import PolyAIHook

PACKAGE = "airflow-provider-polyai"


def _entry_point():
    [entry_point] = [ep for ep in entry_points(group="apache_airflow_provider") if ep.dist.name == PACKAGE]
    return entry_point


def _connection_type() -> dict:
    [connection_type] = get_provider_info()["connection-types"]
    return connection_type


def test_entry_point_resolves_to_get_provider_info():
    assert _entry_point().load() is get_provider_info


def test_provider_info_names_the_distribution():
    assert get_provider_info()["package-name"] == PACKAGE


def test_provider_info_version_matches_package():
    assert get_provider_info()["versions"] == [airflow_provider_polyai.__version__]


@pytest.mark.parametrize(
    ("section", "module"),
    [
        ("hooks", "airflow_provider_polyai.hooks.polyai"),
        ("triggers", "airflow_provider_polyai.triggers.outbound_call"),
        ("sensors", "airflow_provider_polyai.sensors.outbound_call"),
        ("operators", "airflow_provider_polyai.operators.outbound_call"),
    ],
)
def test_provider_info_lists_module(section, module):
    modules = [name for entry in get_provider_info()[section] for name in entry["python-modules"]]

    assert module in modules


@pytest.mark.parametrize("section", ["hooks", "triggers", "sensors", "operators"])
def test_provider_info_modules_import(section):
    for entry in get_provider_info()[section]:
        for module in entry["python-modules"]:
            assert importlib.import_module(module) is not None


@pytest.mark.parametrize("section", ["hooks", "triggers", "sensors", "operators"])
def test_provider_info_integration_is_declared(section):
    declared = {integration["integration-name"] for integration in get_provider_info()["integrations"]}

    for entry in get_provider_info()[section]:
        assert entry["integration-name"] in declared


def test_connection_type_is_polyai():
    assert _connection_type()["connection-type"] == "polyai"


def test_connection_type_names_hook_class():
    module_name, _, class_name = _connection_type()["hook-class-name"].rpartition(".")

    assert getattr(importlib.import_module(module_name), class_name) is PolyAIHook


def test_connection_type_hook_name():
    assert _connection_type()["hook-name"] == "PolyAI"


def test_connection_type_matches_hook_attributes():
    assert PolyAIHook.conn_type == _connection_type()["connection-type"]
    assert PolyAIHook.hook_name == _connection_type()["hook-name"]


def test_connection_fields_match_extras_the_hook_reads():
    assert set(_connection_type()["conn-fields"]) == {
        "timeout",
        "verify_ssl",
        "allow_insecure_http",
        "api_generation",
        "agent_id",
        "environment",
        "variant_id",
    }


@pytest.mark.parametrize("name", ["timeout", "verify_ssl", "allow_insecure_http"])
def test_connection_field_has_label_and_schema(name):
    field = _connection_type()["conn-fields"][name]

    assert field["label"]
    assert "type" in field["schema"]


def test_ui_field_behaviour_relabels_host_and_password():
    relabeling = _connection_type()["ui-field-behaviour"]["relabeling"]

    assert relabeling == {"host": "API base URL", "password": "Connector token"}


def test_ui_field_behaviour_hides_unused_fields():
    hidden = _connection_type()["ui-field-behaviour"]["hidden-fields"]

    assert set(hidden) >= {"schema", "login", "port"}


def test_hook_ui_field_behaviour_matches_provider_info():
    behaviour = _connection_type()["ui-field-behaviour"]

    assert PolyAIHook.get_ui_field_behaviour() == {
        "hidden_fields": behaviour["hidden-fields"],
        "relabeling": behaviour["relabeling"],
        "placeholders": behaviour["placeholders"],
    }


def test_providers_manager_registers_provider():
    from airflow.providers_manager import ProvidersManager

    assert PACKAGE in ProvidersManager().providers


def test_task_runtime_resolves_polyai_hook():
    runtime = pytest.importorskip(
        "airflow.sdk.providers_manager_runtime", reason="the task-runtime providers manager is new in Airflow 3.2"
    )
    ProvidersManagerTaskRuntime = runtime.ProvidersManagerTaskRuntime

    hook_info = ProvidersManagerTaskRuntime().hooks["polyai"]

    assert hook_info.hook_class_name == "airflow_provider_polyai.hooks.polyai.PolyAIHook"


def _run_airflow(*args: str, airflow_home: Path) -> subprocess.CompletedProcess:
    airflow = Path(sys.executable).parent / "airflow"
    env = {**os.environ, "AIRFLOW_HOME": str(airflow_home)}
    return subprocess.run([str(airflow), *args], capture_output=True, text=True, env=env, timeout=120, check=False)


def test_airflow_providers_list_shows_provider(airflow_db):
    result = _run_airflow("providers", "list", "-o", "plain", airflow_home=airflow_db)

    assert result.returncode == 0, result.stderr
    assert PACKAGE in result.stdout
    assert airflow_provider_polyai.__version__ in result.stdout
