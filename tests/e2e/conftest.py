"""Fixtures for the end-to-end tests: one real Airflow deployment shared by the tests in this package."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import AirflowCluster

#: Environment variable naming a new directory for the deployment, which is kept after the run.
#: Without it the deployment lives in pytest's temporary directory, which keeps only the last runs.
WORKDIR_ENV = "POLYAI_E2E_WORKDIR"

DAG_FILES = sorted((Path(__file__).parent / "dags").glob("*.py"))

# The deployment in use, so a failing test's report can show where its logs are.
_ACTIVE: list[AirflowCluster] = []


# Package scope: the deployment stops after the last test in tests/e2e, not at the end of the session,
# so it does not slow down the tests collected after it.
@pytest.fixture(scope="package")
def airflow_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowCluster]:
    """A running scheduler, triggerer, dag-processor, api-server and local PolyAI server.

    Starting it takes about 45 s on a 2-core machine, so the tests in this package share one. A test that kills
    or adds triggerers calls :func:`restore_triggerer` when it ends.
    """
    kept = os.environ.get(WORKDIR_ENV)
    if kept:
        workdir = Path(kept)
        workdir.mkdir(parents=True, exist_ok=False)
    else:
        workdir = tmp_path_factory.mktemp("airflow-e2e")
    cluster = AirflowCluster(workdir, dag_files=DAG_FILES, parallelism=4)
    cluster.start()
    _ACTIVE.append(cluster)
    try:
        yield cluster
    finally:
        _ACTIVE.remove(cluster)
        cluster.stop()


@pytest.fixture
def cluster(airflow_cluster: AirflowCluster) -> Iterator[AirflowCluster]:
    """The shared deployment with exactly one triggerer running again after the test."""
    yield airflow_cluster
    restore_triggerer(airflow_cluster)


def restore_triggerer(cluster: AirflowCluster) -> None:
    """Leave exactly one running triggerer with the default capacity."""
    running = cluster.triggerers()
    if len(running) == 1 and cluster.triggerer_capacity[running[0]] is None:
        return
    for name in running:
        cluster.stop_component(name)
    cluster.start_triggerer()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and _ACTIVE and item.get_closest_marker("e2e"):
        report.sections.append(("Airflow deployment logs", _ACTIVE[0].describe_logs()))
