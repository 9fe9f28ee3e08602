"""What the tests need from Airflow, wherever the installed version keeps it.

Airflow 3.2 and later define the task exceptions in ``airflow.sdk.exceptions`` and keep deprecated
aliases of the same classes in ``airflow.exceptions``; Airflow 3.1 defines them only in
``airflow.exceptions``. The DAG bag and the DAG serializer also moved in 3.2. Markers at the end
skip or expect failures where a version lacks a feature or has a known bug.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest

from airflow_provider_polyai.version_compat import AIRFLOW_V_3_3_PLUS, version_tuple

try:
    from airflow.sdk.exceptions import (
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )


def dagbag_module() -> Any:
    """Return the module that defines ``DagBag`` and ``sync_bag_to_db``."""
    try:
        from airflow.dag_processing import dagbag
    except ImportError:  # Airflow 3.1
        from airflow.models import dagbag  # type: ignore[no-redef]
    return dagbag


def dag_serializer() -> Any:
    """Return the class that turns a DAG into the dict the scheduler stores, and back."""
    from airflow.serialization import serialized_objects

    return getattr(serialized_objects, "DagSerialization", None) or serialized_objects.SerializedDAG


TASK_SDK_VERSION = version_tuple(importlib.metadata.version("apache-airflow-task-sdk"))

#: The task state store arrived in Airflow 3.3; before it, the operator cannot reuse a placed call.
requires_task_state_store = pytest.mark.skipif(
    not AIRFLOW_V_3_3_PLUS,
    reason="needs the task state store (Airflow 3.3+); earlier versions refuse the retry instead",
)

#: Task SDK 1.1.1 to 1.1.3 (Airflow 3.1.1 to 3.1.3) return the first reschedule date as a string
#: inside dag.test(), so any sensor that reschedules there fails with a TypeError. A real worker
#: gets the reply through the supervisor's socket, whose decoder parses the date, so it is not
#: affected. Fixed in task SDK 1.1.4 (apache/airflow#58777).
dag_test_reschedule_bug = pytest.mark.xfail(
    TASK_SDK_VERSION < (1, 1, 4),
    reason="Airflow task SDK < 1.1.4 breaks reschedule mode inside dag.test() (apache/airflow#58777)",
    strict=True,
)

__all__ = [
    "TASK_SDK_VERSION",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "TaskDeferred",
    "dag_serializer",
    "dag_test_reschedule_bug",
    "dagbag_module",
    "requires_task_state_store",
]
