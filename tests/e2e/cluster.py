"""A real Airflow deployment on loopback, started and torn down by a test.

:class:`AirflowCluster` runs the local PolyAI server and Airflow's api-server, scheduler (with
LocalExecutor), dag-processor and one or more triggerers, each as its own process group, against a
throwaway ``AIRFLOW_HOME`` with a SQLite metadata database. The triggerers are separate processes so a
test can kill one alone, or run two at once. The test drives the deployment through Airflow's REST API
and the local server's ``/_local/`` routes, the way an operator of a real deployment would.

Everything binds 127.0.0.1. Component output goes to ``<workdir>/logs/<component>.log`` and task and
trigger logs to ``<workdir>/airflow/logs``; :meth:`AirflowCluster.describe_logs` lists them with their
last lines for a failure report.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import requests

VENV_BIN = Path(sys.executable).parent
POLYAI_TOKEN = "e2e-connector-token"
ADMIN_USER = "admin"

#: Seconds a component gets to exit after SIGTERM before its process group gets SIGKILL.
STOP_GRACE_SECONDS = 15.0

T = TypeVar("T")


class ClusterError(RuntimeError):
    """The deployment did not start, or did not reach an expected state in time."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _restore_sigint() -> None:
    # A child of a non-interactive shell inherits SIGINT as ignored, which would make Ctrl-C in a
    # debugging session leave Airflow running.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Component:
    """One long-running process, started in its own process group so its children stop with it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log_path
        self._log_file = log_path.open("ab")
        self.process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_restore_sigint,
        )
        # With start_new_session the child leads a new process group whose id is its pid.
        self.pgid = self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as a crashed host or container would end it."""
        self._signal_group(signal.SIGKILL)
        self.process.wait(timeout=30)
        self._log_file.close()

    def terminate(self) -> None:
        """SIGTERM the process group without waiting."""
        self._signal_group(signal.SIGTERM)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left of it after a grace period."""
        self._signal_group(signal.SIGTERM)
        try:
            self.process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            pass
        # Children (executor workers, trigger runners, task processes) may outlive the leader.
        self._signal_group(signal.SIGKILL)
        try:
            self.process.wait(timeout=30)
        finally:
            self._log_file.close()

    def _signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pgid, signum)
        except ProcessLookupError:
            pass


class AirflowCluster:
    """Airflow components and the local PolyAI server for one test session, on loopback only.

    :param workdir: empty directory for ``AIRFLOW_HOME``, the DAGs folder and component logs.
    :param dag_files: DAG files copied into the DAGs folder before the dag-processor starts.
    :param parallelism: ``[core] parallelism``: task processes the LocalExecutor runs at once.
    :param time_scale: the local PolyAI server's seconds per wall-clock second.
    :param extra_env: further environment for every Airflow component, for example
        ``{"AIRFLOW__TRIGGERER__CAPACITY": "50"}``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        dag_files: Iterable[Path] = (),
        parallelism: int = 4,
        time_scale: float = 1.0,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.home = workdir / "airflow"
        self.dags_folder = workdir / "dags"
        self.logs_dir = workdir / "logs"
        for path in (self.home, self.dags_folder, self.logs_dir):
            path.mkdir(parents=True, exist_ok=True)
        for dag_file in dag_files:
            self.add_dag_file(dag_file)
        self.parallelism = parallelism
        self.time_scale = time_scale
        self.extra_env = dict(extra_env or {})
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.polyai_url = ""
        self.components: dict[str, Component] = {}
        self._session = requests.Session()
        self._token = ""
        self._triggerer_count = 0
        #: ``--capacity`` of each triggerer started, by component name (``None`` is Airflow's default).
        self.triggerer_capacity: dict[str, int | None] = {}
        self.env: dict[str, str] = {}

    # -- start and stop ---------------------------------------------------------------------------

    def start(self) -> AirflowCluster:
        """Start the server, migrate the database, start the components and wait until healthy.

        On any failure everything started so far is stopped before the error propagates.
        """
        try:
            self._start_polyai_server()
            self.env = self._airflow_env()
            self._migrate_db()
            self._start("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(self.api_port)])
            self._start("dag-processor", ["dag-processor"])
            self._start("scheduler", ["scheduler", "--skip-serve-logs"])
            self.start_triggerer()
            self._wait_for_api()
            self._login()
            self.wait_for_health(("scheduler", "triggerer", "dag_processor"))
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop every component and the server; safe to call twice and after a failed start."""
        components = list(self.components.values())
        # Signal all first, so the components shut down in parallel.
        for component in components:
            component.terminate()
        for component in components:
            component.stop()
        self.components.clear()
        self._session.close()

    def __enter__(self) -> AirflowCluster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _airflow_env(self) -> dict[str, str]:
        from cryptography.fernet import Fernet

        env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW")}
        env.update(
            {
                "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API_AUTH__JWT_SECRET": base64.b64encode(os.urandom(16)).decode(),
                # One parsing process and a short rescan, so DAG files added by a test appear quickly.
                # A file already parsed is parsed again only after 5 minutes: a re-parse that fails,
                # for example while the provider's source is being edited, deactivates its DAGs.
                "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
                # Deferral timeouts are checked every 15 s by default; a test should not wait that long.
                "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
                # A killed triggerer's triggers move to a live one once its heartbeat is this stale.
                # Airflow's default is 30 s, and 15 s keeps restart tests short on a busy machine.
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW_CONN_POLYAI_DEFAULT": json.dumps(
                    {"conn_type": "polyai", "host": self.polyai_url, "password": POLYAI_TOKEN}
                ),
            }
        )
        env.update(self.extra_env)
        return env

    def _start_polyai_server(self) -> None:
        port_file = self.workdir / "polyai-server.port"
        argv = [
            str(VENV_BIN / "polyai-local-server"),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--token",
            POLYAI_TOKEN,
            "--time-scale",
            str(self.time_scale),
        ]
        server = Component("polyai-server", argv, dict(os.environ), self.logs_dir / "polyai-server.log")
        self.components["polyai-server"] = server
        port = wait_until(
            lambda: port_file.exists() and port_file.read_text().strip(),
            timeout=30,
            what="the local PolyAI server to write its port",
            alive=[server],
        )
        self.polyai_url = f"http://127.0.0.1:{port}"

    def _migrate_db(self) -> None:
        log_path = self.logs_dir / "db-migrate.log"
        with log_path.open("wb") as log:
            result = subprocess.run(
                [str(VENV_BIN / "airflow"), "db", "migrate"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=300,
            )
        if result.returncode != 0:
            raise ClusterError(f"`airflow db migrate` exited with {result.returncode}; see {log_path}")

    def _start(self, name: str, args: list[str]) -> Component:
        if name in self.components and self.components[name].running:
            raise ClusterError(f"component {name!r} is already running")
        component = Component(name, [str(VENV_BIN / "airflow"), *args], self.env, self.logs_dir / f"{name}.log")
        self.components[name] = component
        return component

    def _wait_for_api(self) -> None:
        def api_up() -> bool:
            try:
                return self._session.get(f"{self.api_url}/api/v2/version", timeout=5).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(api_up, timeout=120, what="the api-server to answer", alive=[self.components["api-server"]])

    def _login(self) -> None:
        password_file = self.home / "simple_auth_manager_passwords.json.generated"
        wait_until(password_file.exists, timeout=60, what=f"{password_file} to be written")
        password = json.loads(password_file.read_text())[ADMIN_USER]
        response = self._session.post(
            f"{self.api_url}/auth/token", json={"username": ADMIN_USER, "password": password}, timeout=30
        )
        response.raise_for_status()
        self._token = response.json()["access_token"]
        self._session.headers["Authorization"] = f"Bearer {self._token}"

    # -- triggerers -------------------------------------------------------------------------------

    def start_triggerer(self, capacity: int | None = None) -> str:
        """Start one more triggerer process and return its component name."""
        self._triggerer_count += 1
        name = f"triggerer-{self._triggerer_count}"
        args = ["triggerer", "--skip-serve-logs"]
        if capacity is not None:
            args += ["--capacity", str(capacity)]
        self._start(name, args)
        self.triggerer_capacity[name] = capacity
        return name

    def triggerers(self) -> list[str]:
        """Return the names of the triggerer processes still running."""
        return [name for name, c in self.components.items() if name.startswith("triggerer") and c.running]

    def kill(self, name: str) -> None:
        """SIGKILL a component's whole process group, leaving its database rows as a crash would."""
        self.components.pop(name).kill()

    def stop_component(self, name: str) -> None:
        """Stop a component gracefully (SIGTERM), as a deployment rollout would."""
        self.components.pop(name).stop()

    # -- health -----------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        return self.api("GET", "/api/v2/monitor/health")

    def wait_for_health(self, parts: Iterable[str], timeout: float = 120) -> None:
        """Wait until the health endpoint reports every part in ``parts`` healthy."""
        parts = tuple(parts)

        def healthy() -> bool:
            report = self.health()
            return all(report.get(part, {}).get("status") == "healthy" for part in parts)

        wait_until(healthy, timeout=timeout, what=f"{', '.join(parts)} to report healthy", alive=self._airflow())

    def _airflow(self) -> list[Component]:
        return [c for name, c in self.components.items() if name != "polyai-server"]

    # -- Airflow REST API -------------------------------------------------------------------------

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call Airflow's REST API and return the decoded JSON; raise on an HTTP error."""
        response = self._session.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise ClusterError(f"{method} {path} returned HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else None

    def add_dag_file(self, path: Path) -> None:
        """Copy a DAG file into the DAGs folder; the dag-processor picks it up within seconds."""
        shutil.copy(path, self.dags_folder / path.name)

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        """Wait until the dag-processor has parsed ``dag_id`` and the API serves it."""

        def parsed() -> bool:
            response = self._session.get(f"{self.api_url}/api/v2/dags/{dag_id}", timeout=30)
            return response.status_code == 200

        try:
            wait_until(parsed, timeout=timeout, what=f"DAG {dag_id} to be parsed", alive=self._airflow())
        except ClusterError as err:
            errors = self.api("GET", "/api/v2/importErrors")["import_errors"]
            raise ClusterError(f"{err}; import errors: {errors or 'none'}") from err

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        """Unpause ``dag_id``, start a DAG run, and return its run id."""
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def wait_for_run(
        self, dag_id: str, run_id: str, states: Iterable[str] = ("success", "failed"), timeout: float = 180
    ) -> str:
        """Wait until the DAG run is in one of ``states`` and return that state."""
        expected = set(states)
        return wait_until(
            lambda: (state := self.dag_run(dag_id, run_id)["state"]) in expected and state,
            timeout=timeout,
            what=f"DAG run {dag_id}/{run_id} to reach {sorted(expected)}",
            alive=self._airflow(),
        )

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        if map_index >= 0:
            path += f"/{map_index}"
        return self.api("GET", path)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.api("GET", path, params={"limit": 1000})["task_instances"]

    def task_tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        """Return every recorded try of one task instance, oldest first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        tries = self.api("GET", path)["task_instances"]
        return sorted(tries, key=lambda ti: ti["try_number"])

    def wait_for_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        states: Iterable[str],
        timeout: float = 120,
        map_index: int = -1,
    ) -> dict[str, Any]:
        """Wait until a task instance is in one of ``states`` and return it."""
        expected = set(states)
        return wait_until(
            lambda: (ti := self.task_instance(dag_id, run_id, task_id, map_index))["state"] in expected and ti,
            timeout=timeout,
            what=f"task {dag_id}/{run_id}/{task_id}[{map_index}] to reach {sorted(expected)}",
            alive=self._airflow(),
        )

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """Return the deserialized value of one XCom entry."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        params = {"map_index": map_index, "deserialize": "true", "stringify": "false"}
        return self.api("GET", path, params=params)["value"]

    def clear_task(self, dag_id: str, run_id: str, task_ids: list[str]) -> None:
        """Clear task instances of one run so the scheduler runs them again, as the UI's Clear does."""
        body = {
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "reset_dag_runs": True,
        }
        self.api("POST", f"/api/v2/dags/{dag_id}/clearTaskInstances", json=body)

    def pool(self, name: str = "default_pool") -> dict[str, Any]:
        return self.api("GET", f"/api/v2/pools/{name}")

    def task_log_files(self, dag_id: str, run_id: str, task_id: str) -> list[Path]:
        """Return the task's log files on disk (worker and trigger logs of every try)."""
        run_dir = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}" / f"task_id={task_id}"
        return sorted(path for path in run_dir.rglob("*") if path.is_file())

    # -- local PolyAI server ----------------------------------------------------------------------

    def polyai(self, method: str, action: str, payload: Any = None, **params: str) -> Any:
        """Call one of the local PolyAI server's ``/_local/`` routes and return the JSON."""
        response = self._session.request(
            method, f"{self.polyai_url}/_local/{action}", json=payload, params=params, timeout=30
        )
        response.raise_for_status()
        return response.json()

    def script_calls(self, scenarios: dict[str, dict[str, Any]]) -> None:
        """Script how calls to each number progress (see ``CallScenario`` for the keys)."""
        self.polyai("POST", "scenarios", scenarios)

    def calls_to(self, number: str) -> list[dict[str, Any]]:
        """Return the calls the server accepted for ``number``."""
        return [call for call in self.polyai("GET", "calls") if call["to_number"] == number]

    def status_polls(self, call_sid: str) -> list[dict[str, Any]]:
        """Return the status requests the server received for one call, oldest first."""
        entries = self.polyai("GET", "requests", call_sid=call_sid)
        return [entry for entry in entries if entry["method"] == "GET"]

    # -- failure reports --------------------------------------------------------------------------

    def describe_logs(self, tail_lines: int = 40) -> str:
        """Return where every log is, with the last lines of each component's output."""
        sections = [f"Cluster work directory: {self.workdir}", f"Task and trigger logs: {self.home / 'logs'}"]
        for log_path in sorted(self.logs_dir.glob("*.log")):
            lines = log_path.read_text(errors="replace").splitlines()[-tail_lines:]
            sections.append(f"--- {log_path} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(sections)


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    what: str,
    interval: float = 0.5,
    alive: Iterable[Component] = (),
) -> T:
    """Poll ``condition`` until it returns a truthy value and return that value.

    Raise :class:`ClusterError` after ``timeout`` seconds, or as soon as one of the ``alive``
    components has exited, naming its log.
    """
    alive = list(alive)
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        for component in alive:
            if not component.running:
                raise ClusterError(
                    f"{component.name} exited with {component.process.returncode} while waiting for {what}; "
                    f"see {component.log_path}"
                )
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)
