"""Shared fixtures: a throwaway Airflow home and metadata database, and the local PolyAI server."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "airflow_provider_polyai" / "example_dags"

# Airflow reads its settings when first imported, so the throwaway home is set before any test
# module imports it. Nothing here touches the developer's own ~/airflow.
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="polyai-tests-airflow-"))
os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_AIRFLOW_HOME / 'airflow.db'}"
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(EXAMPLE_DAGS)
os.environ.pop("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", None)
os.environ.pop("AIRFLOW_CONN_POLYAI_DEFAULT", None)

pytest_plugins = ["airflow_provider_polyai.testing.pytest_plugin"]


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Create the metadata database once per test session and return the Airflow home."""
    airflow = Path(sys.executable).parent / "airflow"
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, env=os.environ.copy())
    return _AIRFLOW_HOME


def sync_dag_to_db(dag) -> None:
    """Write a DAG defined in a test module to the metadata database, so ``dag.test()`` accepts it.

    ``dag.test()`` in Airflow 3.3 runs only DAGs that have a serialized version in the database. It
    still runs the in-memory tasks, so test doubles defined in the test module work.
    """
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    from tests.compat import dagbag_module

    dagbag = dagbag_module()
    DagBag, sync_bag_to_db = dagbag.DagBag, dagbag.sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(collect_dags=False)
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
