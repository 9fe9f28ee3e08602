"""Connection settings for the PolyAI hook: base URL, connector token and request options."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_polyai.exceptions import PolyAIInvalidInputError

if TYPE_CHECKING:
    from airflow.sdk import Connection

#: Base URL used when the connection's host is empty: PolyAI's US region.
DEFAULT_BASE_URL = "https://api.us-1.platform.polyai.app"

#: Seconds each HTTP request may take, connecting and reading, unless the connection sets ``timeout``.
DEFAULT_TIMEOUT_SECONDS = 10.0

TOKEN_HEADER = "X-PolyAi-Auth-Token"

_LOOPBACK_NAMES = frozenset({"localhost"})


@dataclass(frozen=True)
class ConnectionSettings:
    """Validated settings read from a ``polyai`` connection.

    :param base_url: scheme and host (and port) with no path, for example ``https://api.uk-1.platform.polyai.app``.
    :param token: the connector token; left out of ``repr`` so it cannot reach a log by accident.
    :param timeout: seconds each request may take.
    :param verify_ssl: whether TLS certificates are verified.
    """

    base_url: str
    token: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    verify_ssl: bool = True

    @property
    def headers(self) -> dict[str, str]:
        """Headers sent with every request."""
        return {TOKEN_HEADER: self.token, "Accept": "application/json"}


def _extra_value(extra: dict[str, Any], name: str) -> Any:
    # Older connection forms stored fields as "extra__polyai__<name>"; read both spellings.
    if name in extra:
        return extra[name]
    return extra.get(f"extra__polyai__{name}")


def _as_bool(conn_id: str, name: str, value: Any, default: bool) -> bool:
    if value is None or value == "":
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on"):
        return True
    if isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"):
        return False
    raise PolyAIInvalidInputError(
        f"Connection {conn_id!r}: extra field {name!r} is {value!r}; use true or false."
    )


def _as_timeout(conn_id: str, value: Any) -> float:
    if value is None or value == "":
        return DEFAULT_TIMEOUT_SECONDS
    try:
        timeout = float(value)
    except (TypeError, ValueError):
        timeout = -1.0
    if not 0 < timeout <= 300:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: extra field 'timeout' is {value!r}; "
            "use a number of seconds greater than 0 and at most 300."
        )
    return timeout


def is_loopback_host(hostname: str) -> bool:
    """Return whether ``hostname`` names this machine (``localhost``, 127.0.0.0/8 or ``::1``)."""
    if hostname.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


def normalize_base_url(conn_id: str, host: str | None, port: int | None, allow_insecure_http: bool) -> str:
    """Return the connection's base URL without a trailing slash, or raise if it is unusable."""
    if not host:
        return DEFAULT_BASE_URL
    raw = host.strip()
    if "://" not in raw:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: API base URL {raw!r} has no scheme. "
            f"Write it in full, for example 'https://{raw}'."
        )
    parts = urlsplit(raw)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: API base URL {raw!r} is invalid; "
            "use https://<host>, for example https://api.uk-1.platform.polyai.app."
        )
    if parts.username or parts.password:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: the API base URL must not contain user info; "
            "put the connector token in the Connector token (password) field."
        )
    # A single trailing "/" is the root path and harmless, so it is dropped rather than rejected.
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: API base URL {raw!r} has a path, query or fragment; "
            f"keep only the scheme and host, for example {parts.scheme}://{parts.netloc}."
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname) and not allow_insecure_http:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: refusing to send the connector token over plain HTTP to "
            f"{parts.hostname!r}. Use https://, or set the extra field allow_insecure_http to true "
            "if this host is a trusted test server."
        )
    netloc = parts.netloc
    if port and parts.port is None:
        netloc = f"{netloc}:{port}"
    return f"{parts.scheme}://{netloc}"


def settings_from_connection(conn: Connection) -> ConnectionSettings:
    """Read and validate the settings of a ``polyai`` connection."""
    conn_id = conn.conn_id
    extra = conn.extra_dejson or {}
    token = (conn.password or "").strip()
    if not token:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r} has no connector token: put the token PolyAI gave you in the "
            "Connector token (password) field."
        )
    allow_insecure_http = _as_bool(conn_id, "allow_insecure_http", _extra_value(extra, "allow_insecure_http"), False)
    return ConnectionSettings(
        base_url=normalize_base_url(conn_id, conn.host, conn.port, allow_insecure_http),
        token=token,
        timeout=_as_timeout(conn_id, _extra_value(extra, "timeout")),
        verify_ssl=_as_bool(conn_id, "verify_ssl", _extra_value(extra, "verify_ssl"), True),
    )
