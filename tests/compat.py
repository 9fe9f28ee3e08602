"""Airflow exceptions the tests catch, imported where the installed Airflow defines them.

Airflow 3.2 and later define them in ``airflow.sdk.exceptions`` and keep deprecated aliases of the
same classes in ``airflow.exceptions``. Airflow 3.1 defines them only in ``airflow.exceptions``.
"""

from __future__ import annotations

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

__all__ = [
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "TaskDeferred",
]
