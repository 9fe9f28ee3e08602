"""The three generations of PolyAI's outbound calling API, one strategy object each.

A connection picks its generation with the extra field ``api_generation``:

``outbound`` (the default)
    ``POST /outbound/trigger`` and ``GET /outbound/status/{call_sid}``, header ``X-PolyAi-Auth-Token``.
``v1``
    ``POST /v1/outbound-calling`` and ``GET /v1/outbound-calling/{call_sid}/status``, same hosts and
    header as ``outbound``.
``agents``
    ``POST /v1/agents/{agent_id}/telephony/outbound-calls`` and
    ``GET .../outbound-calls/{call_sid}/status?environment=...`` on ``https://api.{us,eu,uk,studio}.poly.ai``,
    header ``X-API-KEY``.

Each strategy contains what differs: paths, auth header, request body, response fields, statuses,
metadata and encryption rules, retention, and the wording of errors. The hook, trigger, sensor and
operator call these methods and stay the same for every generation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_provider_polyai.exceptions import PolyAIInvalidInputError
from airflow_provider_polyai.hooks.responses import parse_call_sid, parse_call_status
from airflow_provider_polyai.models import VOCABULARIES, CallStatus, StatusVocabulary
from airflow_provider_polyai.validation import validate_encryption, validate_metadata

if TYPE_CHECKING:
    from airflow_provider_polyai.hooks.settings import ConnectionSettings

#: Hosts of the ``outbound`` and ``v1`` generations, one per region.
PLATFORM_HOSTS = frozenset(
    {"api.us-1.platform.polyai.app", "api.uk-1.platform.polyai.app", "api.euw-1.platform.polyai.app"}
)

#: Hosts of the Agents API, one per region.
AGENTS_HOSTS = frozenset({"api.us.poly.ai", "api.eu.poly.ai", "api.uk.poly.ai", "api.studio.poly.ai"})

#: Encryption modes of the v1 generation, in the spelling it accepts.
V1_ENCRYPTION_VALUES = ("UDP/RTP", "UDP/SRTP", "TLS/RTP", "TLS/SRTP")


class ApiGeneration:
    """The rules of one generation of the outbound calling API: paths, header, body and statuses.

    Instances hold no connection state and are shared; per-connection values (agent id,
    environment) come from the :class:`~airflow_provider_polyai.hooks.settings.ConnectionSettings`
    passed to each method.
    """

    #: Value of the connection's ``api_generation`` extra field that selects this generation.
    name: ClassVar[str]
    #: Header that carries the credential from the connection's password field.
    token_header: ClassVar[str]
    #: Name of the credential in this generation's documentation and in error messages.
    credential_name: ClassVar[str]
    #: Base URL used when the connection's host is empty.
    default_base_url: ClassVar[str]
    #: Known hosts of the other generations, rejected with a pointer to the right one.
    foreign_hosts: ClassVar[frozenset[str]]
    #: How long PolyAI keeps a call's status after the call ends, as it reads in a message.
    retention: ClassVar[str]
    #: Whether metadata values must be strings (sent as SIP headers).
    string_metadata_only: ClassVar[bool]
    #: Field of the trigger response that contains the call SID.
    call_sid_field: ClassVar[str] = "call_sid"

    def __repr__(self) -> str:
        return f"ApiGeneration({self.name!r})"

    @property
    def vocabulary(self) -> StatusVocabulary:
        """The raw statuses of this generation, their outcomes and which are terminal."""
        return VOCABULARIES[self.name]

    # -- requests ---------------------------------------------------------------------------------

    def trigger_path(self, settings: ConnectionSettings) -> str:
        raise NotImplementedError

    def status_path(self, settings: ConnectionSettings, call_sid: str) -> str:
        """Return the path, with query if any, of ``call_sid``'s status; the SID is already validated."""
        raise NotImplementedError

    def check_encryption(self, encryption: Any) -> str | None:
        """Return the encryption value to send, or ``None`` for the server default; raise if invalid."""
        return validate_encryption(encryption)

    def check_metadata(self, metadata: Any) -> dict[str, Any] | None:
        """Return metadata that this generation accepts, or ``None`` when none was given; raise if invalid."""
        return validate_metadata(metadata, string_values_for=self.name if self.string_metadata_only else None)

    def trigger_body(
        self,
        settings: ConnectionSettings,
        number: str,
        region: str | None,
        encryption: str | None,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Return the JSON body of a trigger request from values that are already validated."""
        body: dict[str, Any] = {"to_number": number}
        if region:
            body["country_code"] = region
        if encryption is not None:
            body["encryption"] = encryption
        if metadata is not None:
            body["metadata"] = metadata
        return body

    # -- responses --------------------------------------------------------------------------------

    def parse_call_sid(self, body: str, *, subject: str) -> str:
        """Return the call SID of a successful trigger response, or raise if it has none."""
        return parse_call_sid(body, subject=subject, field=self.call_sid_field)

    def parse_call_status(self, call_sid: str, body: str) -> CallStatus:
        """Return the status in a successful status response, tagged with this generation."""
        return parse_call_status(call_sid, body, generation=self.name)

    def describe_error(
        self, status_code: int, detail: str, *, subject: str, conn_id: str, settings: ConnectionSettings, trigger: bool
    ) -> str | None:
        """Return the message for an HTTP error of this generation, or ``None`` for the default one.

        :param detail: the status code and the server's code and message, already formatted.
        :param trigger: whether the request was a trigger request rather than a status read.
        """
        return None


class OutboundGeneration(ApiGeneration):
    """The primary generation: ``POST /outbound/trigger`` and ``GET /outbound/status/{call_sid}``."""

    name = "outbound"
    token_header = "X-PolyAi-Auth-Token"
    credential_name = "connector token"
    default_base_url = "https://api.us-1.platform.polyai.app"
    foreign_hosts = AGENTS_HOSTS
    retention = "30 days after the call ended"
    string_metadata_only = False

    def trigger_path(self, settings: ConnectionSettings) -> str:
        return "/outbound/trigger"

    def status_path(self, settings: ConnectionSettings, call_sid: str) -> str:
        return f"/outbound/status/{call_sid}"


class LegacyV1Generation(ApiGeneration):
    """The ``/v1/outbound-calling`` generation: statuses ``queued``, ``calling``, ``success``, ``failure``."""

    name = "v1"
    token_header = "X-PolyAi-Auth-Token"
    credential_name = "connector token"
    default_base_url = "https://api.us-1.platform.polyai.app"
    foreign_hosts = AGENTS_HOSTS
    retention = "about 2 hours after the call ended"
    string_metadata_only = True

    def trigger_path(self, settings: ConnectionSettings) -> str:
        return "/v1/outbound-calling"

    def status_path(self, settings: ConnectionSettings, call_sid: str) -> str:
        return f"/v1/outbound-calling/{call_sid}/status"

    def check_encryption(self, encryption: Any) -> str | None:
        if encryption is None or encryption == "":
            return None
        if encryption not in V1_ENCRYPTION_VALUES:
            raise PolyAIInvalidInputError(
                f"encryption {encryption!r} is invalid for API generation 'v1': use one of "
                f"{', '.join(V1_ENCRYPTION_VALUES)}, or leave it unset for TLS/SRTP."
            )
        return str(encryption)

    def trigger_body(
        self,
        settings: ConnectionSettings,
        number: str,
        region: str | None,
        encryption: str | None,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        # v1 has no "ZZ" placeholder region: country_code is only for reading a national number.
        return super().trigger_body(settings, number, region if region != "ZZ" else None, encryption, metadata)

    def describe_error(
        self, status_code: int, detail: str, *, subject: str, conn_id: str, settings: ConnectionSettings, trigger: bool
    ) -> str | None:
        if status_code == 401 and trigger:
            return (
                f"PolyAI rejected the connector token of connection {conn_id!r} for {subject} ({detail}). "
                "Check that the token in the connection's password field is current, and that its "
                "connector is set up for outbound calling: the v1 API answers 401 for both."
            )
        if status_code == 404:
            return (
                f"PolyAI has no record of {subject} ({detail}): the SID is unknown to this connector, was "
                f"placed with another connector, or is past the v1 API's retention period ({self.retention}). "
                "Check the SID and the connection, and read the status within 2 hours of the call's end."
            )
        return None


class AgentsGeneration(ApiGeneration):
    """The Agents API generation: calls placed by one agent in one environment, with an API key."""

    name = "agents"
    token_header = "X-API-KEY"
    credential_name = "API key"
    default_base_url = "https://api.us.poly.ai"
    foreign_hosts = PLATFORM_HOSTS
    retention = "about 2 hours after the call ended"
    string_metadata_only = True
    call_sid_field = "callSid"

    # The Agents API documents only "tls_srtp" (its default); the other three are PolyAI's other
    # modes in the same spelling.
    # NOTE: only tls_srtp is confirmed by the API's own documentation; the other values are inferred.
    _ENCRYPTION_BY_NAME: ClassVar[Mapping[str, str]] = {
        "UDP/RTP": "udp_rtp",
        "UDP/SRTP": "udp_srtp",
        "TLS/RTP": "tls_rtp",
        "TLS/SRTP": "tls_srtp",
    }

    def trigger_path(self, settings: ConnectionSettings) -> str:
        return f"/v1/agents/{settings.agent_id}/telephony/outbound-calls"

    def status_path(self, settings: ConnectionSettings, call_sid: str) -> str:
        return (
            f"/v1/agents/{settings.agent_id}/telephony/outbound-calls/{call_sid}/status"
            f"?environment={settings.environment}"
        )

    def check_encryption(self, encryption: Any) -> str | None:
        """Accept ``TLS/SRTP`` as the other generations spell it, or ``tls_srtp`` as this one does."""
        if encryption is None or encryption == "":
            return None
        if encryption in self._ENCRYPTION_BY_NAME:
            return self._ENCRYPTION_BY_NAME[encryption]
        if encryption in self._ENCRYPTION_BY_NAME.values():
            return str(encryption)
        raise PolyAIInvalidInputError(
            f"encryption {encryption!r} is invalid for API generation 'agents': use one of "
            f"{', '.join(self._ENCRYPTION_BY_NAME.values())} (or {', '.join(self._ENCRYPTION_BY_NAME)}), "
            "or leave it unset for tls_srtp."
        )

    def trigger_body(
        self,
        settings: ConnectionSettings,
        number: str,
        region: str | None,
        encryption: str | None,
        metadata: dict[str, Any] | None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"toNumber": number, "environment": settings.environment}
        if region and region != "ZZ":
            body["countryCode"] = region
        if settings.variant_id:
            body["variantId"] = settings.variant_id
        if encryption is not None:
            body["encryption"] = encryption
        if metadata is not None:
            body["metadata"] = metadata
        return body

    def describe_error(
        self, status_code: int, detail: str, *, subject: str, conn_id: str, settings: ConnectionSettings, trigger: bool
    ) -> str | None:
        where = f"agent {settings.agent_id!r} in environment {settings.environment!r}"
        if status_code == 401:
            return (
                f"PolyAI rejected the API key of connection {conn_id!r} for {subject} ({detail}). "
                "Check that the password field holds a current Agents API key."
            )
        if status_code == 403:
            return (
                f"PolyAI refused {subject} for {where} ({detail}): the API key of connection {conn_id!r} "
                "lacks permission. Use a key with access to this agent's outbound calls."
            )
        if status_code == 404 and trigger:
            return (
                f"PolyAI found no outbound connector for {where} ({detail}). Check agent_id and "
                f"environment in connection {conn_id!r}, and that outbound calling is set up for that "
                "environment."
            )
        if status_code == 404:
            return (
                f"PolyAI has no record of {subject} for {where} ({detail}): the SID is unknown, was placed "
                "by another agent or in another environment, or is past the Agents API's retention "
                f"period ({self.retention}). Status reads must use the environment that placed the call."
            )
        if status_code == 400 and not trigger:
            return (
                f"PolyAI rejected the status request for {subject} as invalid ({detail}). The Agents API "
                f"also answers 400 when no connector matches {where}: check agent_id and environment in "
                f"connection {conn_id!r}; environment must be the one that placed the call."
            )
        return None


OUTBOUND = OutboundGeneration()
LEGACY_V1 = LegacyV1Generation()
AGENTS = AgentsGeneration()

#: Every generation by the name a connection gives in ``api_generation``.
GENERATIONS: Mapping[str, ApiGeneration] = {generation.name: generation for generation in (OUTBOUND, LEGACY_V1, AGENTS)}


def get_generation(name: str) -> ApiGeneration:
    """Return the generation called ``name``; raise ``KeyError`` for an unknown name."""
    return GENERATIONS[name]
