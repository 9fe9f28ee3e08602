"""Provider registration as Airflow's CLI reports it, and the built wheel and sdist."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import pkgutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import airflow_provider_polyai
from airflow_provider_polyai.get_provider_info import get_provider_info

ROOT = Path(__file__).resolve().parent.parent
DIST_NAME = "airflow-provider-polyai"
PACKAGE = "airflow_provider_polyai"


def _airflow_json(*args: str) -> list[dict]:
    """Run ``airflow <args> -o json`` and return the parsed output."""
    airflow = Path(sys.executable).parent / "airflow"
    result = subprocess.run(
        [str(airflow), *args, "-o", "json"], capture_output=True, text=True, env=os.environ.copy(), check=True
    )
    # Some Airflow versions print warnings on stdout before the JSON.
    return json.loads(result.stdout[result.stdout.index("[") :])


@functools.cache
def _providers(*args: str) -> list[dict]:
    # Each CLI call starts Airflow afresh (several seconds), so every output is read once.
    return _airflow_json("providers", *args)


def _modules_defining(layer: str, base: type) -> set[str]:
    """Return the modules under ``airflow_provider_polyai.<layer>`` that define a subclass of ``base``."""
    package = importlib.import_module(f"{PACKAGE}.{layer}")
    found = set()
    for info in pkgutil.iter_modules(package.__path__, prefix=f"{package.__name__}."):
        module = importlib.import_module(info.name)
        for _, member in inspect.getmembers(module, inspect.isclass):
            if member.__module__ == module.__name__ and issubclass(member, base) and member is not base:
                found.add(module.__name__)
    return found


def _registered(kind: str) -> set[str]:
    return {module for entry in get_provider_info()[kind] for module in entry["python-modules"]}


def _layer_bases() -> dict[str, tuple[str, type]]:
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
    from airflow.triggers.base import BaseTrigger

    return {
        "hooks": ("hooks", BaseHook),
        "triggers": ("triggers", BaseTrigger),
        "sensors": ("sensors", BaseSensorOperator),
        "operators": ("operators", BaseOperator),
    }


@pytest.mark.parametrize("kind", ["hooks", "triggers", "sensors", "operators"])
def test_provider_info_lists_every_module(kind):
    layer, base = _layer_bases()[kind]

    assert _registered(kind) == _modules_defining(layer, base)


def test_version_has_one_source():
    assert importlib.metadata.version(DIST_NAME) == airflow_provider_polyai.__version__
    assert get_provider_info()["versions"] == [airflow_provider_polyai.__version__]


def test_providers_list_shows_package():
    entries = [entry for entry in _providers("list") if entry["package_name"] == DIST_NAME]

    assert len(entries) == 1
    assert entries[0]["version"] == airflow_provider_polyai.__version__


def test_providers_hooks_shows_connection_type():
    entries = [entry for entry in _providers("hooks") if entry["connection_type"] == "polyai"]

    assert len(entries) == 1
    assert entries[0]["class"] == f"{PACKAGE}.hooks.polyai.PolyAIHook"
    assert entries[0]["hook_name"] == "PolyAI"
    assert entries[0]["conn_id_attribute_name"] == "polyai_conn_id"


def test_providers_triggers_shows_every_trigger_module():
    listed = {entry["class"] for entry in _providers("triggers") if entry["package_name"] == DIST_NAME}

    assert listed == _registered("triggers")


def test_providers_behaviours_shows_polyai():
    from airflow_provider_polyai.version_compat import AIRFLOW_V_3_2_PLUS

    if not AIRFLOW_V_3_2_PLUS and importlib.util.find_spec("wtforms") is None:
        pytest.skip("Airflow 3.1 registers a hook's field behaviour only when WTForms is installed")
    listed = {entry["field_behaviours"] for entry in _providers("behaviours")}

    assert "polyai" in listed


@pytest.mark.parametrize("kind", ["sensors", "operators", "hooks", "triggers"])
def test_providers_get_shows_every_module(kind):
    # Airflow 3.3 has no `airflow providers sensors`; `providers get --full` reports every layer.
    (info,) = _providers("get", DIST_NAME, "--full")
    listed = {module for entry in info[kind] for module in entry["python-modules"]}

    assert listed == _registered(kind)


# -- built distributions ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Build the wheel and sdist from the working tree into a temporary folder."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--sdist", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return {"wheel": wheel, "sdist": sdist}


@pytest.fixture(scope="module")
def wheel_names(dists) -> set[str]:
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        return set(wheel.namelist())


def _dist_info_file(dists, name: str) -> str:
    version = airflow_provider_polyai.__version__
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        return wheel.read(f"airflow_provider_polyai-{version}.dist-info/{name}").decode()


@pytest.mark.slow
def test_dists_pass_twine_check(dists):
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(dists["wheel"]), str(dists["sdist"])],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_dists_carry_version(dists):
    version = airflow_provider_polyai.__version__

    assert dists["wheel"].name.startswith(f"airflow_provider_polyai-{version}-")
    assert dists["sdist"].name == f"airflow_provider_polyai-{version}.tar.gz"


@pytest.mark.slow
@pytest.mark.parametrize(
    "path",
    [
        f"{PACKAGE}/py.typed",
        f"{PACKAGE}/example_dags/example_polyai_outbound_calls.py",
        f"{PACKAGE}/example_dags/example_polyai_campaign.py",
        f"{PACKAGE}/example_dags/data/campaign_contacts.csv",
        f"{PACKAGE}/testing/__init__.py",
        f"{PACKAGE}/testing/pytest_plugin.py",
        f"{PACKAGE}/testing/server.py",
    ],
)
def test_wheel_contains_file(wheel_names, path):
    assert path in wheel_names


@pytest.mark.slow
def test_wheel_leaves_out_tests(wheel_names):
    assert not [name for name in wheel_names if name.startswith("tests/")]


@pytest.mark.slow
def test_wheel_declares_entry_points(dists):
    entry_points = _dist_info_file(dists, "entry_points.txt")

    assert "[apache_airflow_provider]" in entry_points
    assert "provider_info = airflow_provider_polyai.get_provider_info:get_provider_info" in entry_points
    assert "polyai-local-server = airflow_provider_polyai.testing.server:main" in entry_points


@pytest.mark.slow
def test_wheel_declares_license(dists):
    metadata = _dist_info_file(dists, "METADATA")

    assert "License-Expression: Apache-2.0" in metadata
    assert "License-File: LICENSE" in metadata


@pytest.mark.slow
@pytest.mark.parametrize("name", ["LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml"])
def test_sdist_contains_file(dists, name):
    version = airflow_provider_polyai.__version__
    with tarfile.open(dists["sdist"]) as sdist:
        names = sdist.getnames()

    assert f"airflow_provider_polyai-{version}/{name}" in names
