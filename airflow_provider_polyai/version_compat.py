"""Names whose home depends on the installed Airflow version, imported from one place.

Airflow 3.2 moved the task exceptions to ``airflow.sdk.exceptions`` and added
``airflow.sdk.configuration``; Airflow 3.1 has them only in ``airflow.exceptions`` and
``airflow.configuration``. Every provider module imports these names from here, so a new
Airflow release that moves one of them needs a change in this file only.
"""

from __future__ import annotations

import re
from typing import Any

from airflow import __version__ as _airflow_version


def version_tuple(version: str) -> tuple[int, ...]:
    """Return the (major, minor, micro) release of a version string such as ``"3.2.0rc1"``.

    Pre-releases and dev builds count as their release, because they already carry its features.
    """
    numbers = []
    for piece in version.split(".")[:3]:
        match = re.match(r"\d+", piece)
        numbers.append(int(match.group()) if match else 0)
    return tuple(numbers + [0] * (3 - len(numbers)))


#: The installed Airflow's release as (major, minor, micro).
AIRFLOW_VERSION = version_tuple(_airflow_version)
#: Airflow 3.2 and later read a connection type's form fields from ``get_provider_info()``.
AIRFLOW_V_3_2_PLUS = AIRFLOW_VERSION >= (3, 2, 0)
#: Airflow 3.3 and later pass ``task_state_store`` in the task context.
AIRFLOW_V_3_3_PLUS = AIRFLOW_VERSION >= (3, 3, 0)

try:
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferralTimeout,
    )
except ImportError:  # Airflow 3.1
    from airflow.exceptions import (  # type: ignore[no-redef]
        AirflowException,
        AirflowFailException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferralTimeout,
    )


def airflow_conf() -> Any:
    """Return Airflow's configuration object, imported when first needed."""
    try:
        from airflow.sdk.configuration import conf
    except ImportError:  # Airflow 3.1
        from airflow.configuration import conf
    return conf


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "TaskDeferralTimeout",
    "airflow_conf",
]
