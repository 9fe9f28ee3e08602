"""Connection settings for the PolyAI hook: base URL, connector token and request options."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_polyai.exceptions import PolyAIInvalidInputError
from airflow_provider_polyai.hooks.generations import GENERATIONS, OUTBOUND, ApiGeneration
from airflow_provider_polyai.models import API_GENERATIONS
from airflow_provider_polyai.validation import validate_agent_id, validate_environment

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
    :param generation: the API generation the connection uses (extra field ``api_generation``).
    :param agent_id: the Agents API agent that places the calls; only for the ``agents`` generation.
    :param environment: the Agents API environment (``sandbox``, ``pre-release`` or ``live``) calls
        are placed and read in; only for the ``agents`` generation.
    :param variant_id: the Agents API variant to call with; ``None`` uses the environment's default.
    """

    base_url: str
    token: str = field(repr=False)
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    verify_ssl: bool = True
    generation: ApiGeneration = OUTBOUND
    agent_id: str | None = None
    environment: str | None = None
    variant_id: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        """Headers sent with every request."""
        return {self.generation.token_header: self.token, "Accept": "application/json"}


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


def normalize_base_url(
    conn_id: str, host: str | None, port: int | None, allow_insecure_http: bool, *, default: str = DEFAULT_BASE_URL
) -> str:
    """Return the connection's base URL without a trailing slash, or raise if it is unusable.

    :param default: base URL returned when ``host`` is empty.
    """
    if not host:
        return default
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
    # An invalid port would otherwise surface only at request time, as a transport error that makes
    # a trigger request look as if it may have reached PolyAI.
    try:
        url_port = parts.port
    except ValueError:  # not a number, or above 65535
        url_port = -1
    if url_port is not None and not 0 < url_port <= 65535:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: API base URL {raw!r} has an invalid port; "
            "use a number from 1 to 65535, or leave the port out for the scheme's default."
        )
    netloc = parts.netloc
    if port and url_port is None:
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
    # HTTP clients echo a rejected header value in their error text, so a token with a space, line
    # break or non-ASCII character would end up in the task log. The message never repeats it.
    if not all("!" <= char <= "~" for char in token):
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: the connector token contains a space, control or non-ASCII "
            "character, which cannot be sent in an HTTP header. Paste the token again as one line."
        )
    allow_insecure_http = _as_bool(conn_id, "allow_insecure_http", _extra_value(extra, "allow_insecure_http"), False)

    generation = _as_generation(conn_id, extra)
    base_url = normalize_base_url(
        conn_id, conn.host, conn.port, allow_insecure_http, default=generation.default_base_url
    )
    _check_host_matches_generation(conn_id, base_url, generation)

    agent_id = environment = variant_id = None
    if generation.name == "agents":
        agent_id = validate_agent_id(_extra_value(extra, "agent_id"), conn_id=conn_id)
        environment = validate_environment(_extra_value(extra, "environment"), conn_id=conn_id)
        variant_id = _as_optional_string(conn_id, "variant_id", _extra_value(extra, "variant_id"))

    return ConnectionSettings(
        base_url=base_url,
        token=token,
        timeout=_as_timeout(conn_id, _extra_value(extra, "timeout")),
        verify_ssl=_as_bool(conn_id, "verify_ssl", _extra_value(extra, "verify_ssl"), True),
        generation=generation,
        agent_id=agent_id,
        environment=environment,
        variant_id=variant_id,
    )


def _as_generation(conn_id: str, extra: dict[str, Any]) -> ApiGeneration:
    value = _extra_value(extra, "api_generation")
    if value is None or value == "":
        # Agents API fields without a generation almost always mean a forgotten api_generation;
        # sending them to the primary API would fail later with a less clear 401.
        stray = [name for name in ("agent_id", "environment") if _extra_value(extra, name) not in (None, "")]
        if stray:
            raise PolyAIInvalidInputError(
                f"Connection {conn_id!r} sets {', '.join(stray)} but no api_generation; set the extra "
                "field api_generation to 'agents' to use the Agents API, or remove those fields."
            )
        return OUTBOUND
    name = value.strip().lower() if isinstance(value, str) else None
    if name is None or name not in GENERATIONS:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: extra field api_generation is {value!r}; use one of "
            f"{', '.join(API_GENERATIONS)}, or leave it empty for outbound."
        )
    return GENERATIONS[name]


def _check_host_matches_generation(conn_id: str, base_url: str, generation: ApiGeneration) -> None:
    hostname = urlsplit(base_url).hostname or ""
    if hostname in generation.foreign_hosts:
        expected = f"{generation.default_base_url} or another region's host"
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: host {hostname!r} belongs to another PolyAI API generation than "
            f"api_generation {generation.name!r}. Use {expected}, or set api_generation to the "
            "generation this host serves."
        )


def _as_optional_string(conn_id: str, name: str, value: Any) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or value != value.strip():
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: extra field {name!r} is {value!r}; use a string without surrounding spaces."
        )
    return value
