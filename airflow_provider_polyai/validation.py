"""Checks on call SIDs, phone numbers and call options, run before any request is sent.

Each check raises :class:`PolyAIInvalidInputError` naming the rejected value and the fix, so a bad
value from a template or an upstream XCom fails the task before PolyAI is contacted.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from airflow_provider_polyai.exceptions import PolyAIInvalidInputError

#: Characters of a rejected value repeated in an error message; longer values are cut.
MAX_SHOWN_VALUE_CHARS = 80


def shown(value: Any) -> str:
    """Return ``repr(value)`` for an error message, cut to a readable length with the full size noted."""
    text = repr(value)
    if len(text) <= MAX_SHOWN_VALUE_CHARS:
        return text
    return f"{text[:MAX_SHOWN_VALUE_CHARS]}… ({len(text):,} characters)"


CALL_SID_PREFIX = "OUT-"

# All three API generations (outbound, v1, agents) document only the "OUT-" prefix; the rest has
# been a UUID so far. Allowing letters, digits, "-" and "_" accepts any future id while keeping
# "/", "?", "#", "%" and ".." out of the URL path.
_CALL_SID_PATTERN = re.compile(r"OUT-[A-Za-z0-9_-]{1,128}")

ENCRYPTION_VALUES = ("TLS/SRTP", "UDP/RTP")

# PolyAI rejects metadata of 26 KB or more once base64-encoded. We read KB as 1,000 bytes, the
# stricter reading, so a payload we accept is never rejected by the server for its size.
METADATA_MAX_BASE64_BYTES = 26_000


def validate_call_sid(call_sid: Any) -> str:
    """Return ``call_sid`` unchanged if it is a well-formed call SID, else raise.

    A SID is checked before it is put in a URL path, so the request can only reach the status
    endpoint of that one call.
    """
    if isinstance(call_sid, (list, tuple, set, frozenset)):
        raise PolyAIInvalidInputError(
            f"Expected one call SID, got a {type(call_sid).__name__} of {len(call_sid)}: {shown(call_sid)}. "
            "Map the task over the SIDs with .expand(call_sid=...) to wait for each one."
        )
    if call_sid is None or call_sid == "None":
        raise PolyAIInvalidInputError(
            f"Call SID is {shown(call_sid)}: the upstream task that should provide it pushed no SID. "
            "Check that the task placing the call succeeded and returns the SID."
        )
    if not isinstance(call_sid, str):
        raise PolyAIInvalidInputError(
            f"Call SID must be a string like 'OUT-<uuid>', got {type(call_sid).__name__} {shown(call_sid)}."
        )
    if not call_sid.strip():
        raise PolyAIInvalidInputError(
            f"Call SID {shown(call_sid)} is empty: pass the SID returned when the call was triggered."
        )
    if call_sid != call_sid.strip():
        raise PolyAIInvalidInputError(
            f"Call SID {shown(call_sid)} has whitespace around it: remove the surrounding spaces or newlines."
        )
    if not call_sid.startswith(CALL_SID_PREFIX):
        raise PolyAIInvalidInputError(
            f"Call SID {shown(call_sid)} is invalid: SIDs start with {CALL_SID_PREFIX!r} (upper case), "
            "as returned by the trigger endpoint."
        )
    if not _CALL_SID_PATTERN.fullmatch(call_sid):
        raise PolyAIInvalidInputError(
            f"Call SID {shown(call_sid)} is invalid: after {CALL_SID_PREFIX!r} only letters, digits, '-' and '_' "
            "are allowed (at most 128). Pass the SID exactly as the trigger endpoint returned it."
        )
    return call_sid


def normalize_country_code(country_code: Any) -> str | None:
    """Return an upper-case ISO 3166-1 alpha-2 code, or ``None`` when none was given."""
    # Imported here: phonenumbers takes about 60 ms to import, which every DAG file parse would pay.
    import phonenumbers

    if country_code is None or country_code == "":
        return None
    if not isinstance(country_code, str):
        raise PolyAIInvalidInputError(
            f"country_code must be an ISO 3166-1 alpha-2 string such as 'GB', got {shown(country_code)}."
        )
    code = country_code.strip().upper()
    if code != "ZZ" and code not in phonenumbers.SUPPORTED_REGIONS:
        raise PolyAIInvalidInputError(
            f"country_code {shown(country_code)} is not an ISO 3166-1 alpha-2 region known to phonenumbers. "
            "Use a code such as 'US' or 'GB', or leave it unset for E.164 numbers."
        )
    return code


def normalize_phone_number(to_number: Any, country_code: str | None = None) -> str:
    """Return ``to_number`` in E.164 form, or raise if it is not a valid phone number.

    Without ``country_code`` the number must already be in E.164 form (``+`` and the country
    calling code). With it, a national number such as ``020 7183 8750`` is read in that region.
    """
    import phonenumbers

    if not isinstance(to_number, str) or not to_number.strip():
        raise PolyAIInvalidInputError(
            f"to_number must be a phone number string in E.164 form such as '+14155552671', got {shown(to_number)}."
        )
    region = country_code if country_code and country_code != "ZZ" else None
    if region is None and not to_number.strip().startswith("+"):
        raise PolyAIInvalidInputError(
            f"Phone number {shown(to_number)} is not in E.164 form: add '+' and the country calling code "
            "(for example '+442071838750'), or pass country_code to read it as a national number."
        )
    try:
        parsed = phonenumbers.parse(to_number, region)
    except phonenumbers.NumberParseException as err:
        raise PolyAIInvalidInputError(
            f"Phone number {shown(to_number)} could not be parsed ({err}). "
            "Use E.164 form such as '+14155552671'."
        ) from err
    if not phonenumbers.is_valid_number(parsed):
        where = f" in region {country_code}" if region else ""
        raise PolyAIInvalidInputError(
            f"Phone number {shown(to_number)} is not a valid number{where}: check its digits and country code."
        )
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def validate_encryption(encryption: Any) -> str | None:
    """Return the encryption value if it is one the API accepts, or ``None`` for the server default."""
    if encryption is None or encryption == "":
        return None
    if encryption not in ENCRYPTION_VALUES:
        raise PolyAIInvalidInputError(
            f"encryption {shown(encryption)} is invalid: use one of {', '.join(ENCRYPTION_VALUES)} "
            "or leave it unset for TLS/SRTP."
        )
    return str(encryption)


def validate_metadata(metadata: Any, *, string_values_for: str | None = None) -> dict[str, Any] | None:
    """Return metadata as a dict that fits the API's size limit, or ``None`` when none was given.

    A string is accepted when it holds a JSON object, because templated fields render to strings.

    :param string_values_for: name of an API generation that sends metadata as SIP headers and so
        accepts only string values; ``None`` allows any JSON value, as the primary generation does.
    """
    if metadata is None or metadata == "":
        return None
    if isinstance(metadata, str):
        try:
            metadata = json.loads(metadata)
        except json.JSONDecodeError as err:
            raise PolyAIInvalidInputError(
                f"metadata is a string but not JSON ({err.msg} at position {err.pos}). "
                "Pass a dict or a JSON object string."
            ) from err
    if not isinstance(metadata, Mapping):
        raise PolyAIInvalidInputError(
            f"metadata must be a JSON object (a dict with string keys), got {type(metadata).__name__}."
        )
    bad_keys = [key for key in metadata if not isinstance(key, str)]
    if bad_keys:
        raise PolyAIInvalidInputError(f"metadata keys must be strings; these are not: {shown(bad_keys)}.")
    if string_values_for is not None:
        not_strings = {key: type(value).__name__ for key, value in metadata.items() if not isinstance(value, str)}
        if not_strings:
            raise PolyAIInvalidInputError(
                f"metadata values must be strings for API generation {string_values_for!r}, which sends "
                f"them as SIP headers; these are not: {not_strings}. Convert each value with str() or "
                "json.dumps() before passing it."
            )
    try:
        encoded = json.dumps(dict(metadata), separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as err:
        raise PolyAIInvalidInputError(
            f"metadata cannot be sent as JSON ({err}). Use strings, numbers, booleans, lists and dicts."
        ) from err
    size = len(base64.b64encode(encoded))
    if size >= METADATA_MAX_BASE64_BYTES:
        raise PolyAIInvalidInputError(
            f"metadata is {size:,} bytes once base64-encoded; PolyAI accepts less than "
            f"{METADATA_MAX_BASE64_BYTES:,}. Send an id and look the details up in the agent instead."
        )
    return dict(metadata)


#: Environments of an agent in PolyAI's Agents API. A call's status is read in the environment the
#: call was placed in.
AGENT_ENVIRONMENTS = ("sandbox", "pre-release", "live")

# The Agents API does not document the form of an agent id. Letters, digits, ".", "-" and "_" keep
# "/", "?", "#" and "%" out of the URL path; ".." is rejected separately.
_AGENT_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,128}")


def validate_agent_id(agent_id: Any, *, conn_id: str) -> str:
    """Return the Agents API agent id from connection ``conn_id``, or raise if it is missing or unsafe."""
    if agent_id is None or (isinstance(agent_id, str) and not agent_id.strip()):
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r} uses api_generation 'agents' but has no agent_id: set the extra "
            "field agent_id to the id of the agent that places the calls, as shown in Agent Studio."
        )
    if not isinstance(agent_id, str) or not _AGENT_ID_PATTERN.fullmatch(agent_id) or ".." in agent_id:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: extra field agent_id {shown(agent_id)} is invalid; use the agent id "
            "exactly as PolyAI shows it (letters, digits, '.', '-' and '_', at most 128, no '..')."
        )
    return agent_id


def validate_environment(environment: Any, *, conn_id: str) -> str:
    """Return the Agents API environment from connection ``conn_id``, or raise if it is missing or unknown."""
    if environment is None or environment == "":
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r} uses api_generation 'agents' but has no environment: set the extra "
            f"field environment to one of {', '.join(AGENT_ENVIRONMENTS)}. The status of a call is only "
            "found in the environment that placed it."
        )
    if environment not in AGENT_ENVIRONMENTS:
        raise PolyAIInvalidInputError(
            f"Connection {conn_id!r}: extra field environment {shown(environment)} is invalid; use one of "
            f"{', '.join(AGENT_ENVIRONMENTS)} (lower case)."
        )
    return str(environment)
