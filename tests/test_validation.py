"""Input checks that run before any request: call SIDs, numbers, options, connection settings."""

from __future__ import annotations

import json

import pytest

from airflow.sdk import Connection

from airflow_provider_polyai.exceptions import PolyAIInvalidInputError
from airflow_provider_polyai.hooks.settings import (
    DEFAULT_BASE_URL,
    DEFAULT_TIMEOUT_SECONDS,
    TOKEN_HEADER,
    settings_from_connection,
)
from airflow_provider_polyai.models import TERMINAL_STATUSES, CallStatus, OutboundCallStatus, next_poll_interval
from airflow_provider_polyai.validation import (
    METADATA_MAX_BASE64_BYTES,
    normalize_country_code,
    normalize_phone_number,
    validate_call_sid,
    validate_encryption,
    validate_metadata,
)
from airflow_provider_polyai.waiting import validate_failure_statuses, validate_intervals

SID = "OUT-550e8400-e29b-41d4-a716-446655440000"


def _connection(host: str | None = "https://api.uk-1.platform.polyai.app", password: str | None = "tok", **extra):
    return Connection(
        conn_id="polyai_test",
        conn_type="polyai",
        host=host,
        password=password,
        extra=json.dumps(extra) if extra else None,
    )


def _metadata_of_json_size(size: int) -> dict[str, str]:
    # '{"k":""}' is 8 bytes of compact JSON, so the value pads the document to ``size`` bytes.
    return {"k": "x" * (size - 8)}


# -- call SIDs ----------------------------------------------------------------------------------


def test_call_sid_accepts_trigger_format():
    assert validate_call_sid(SID) == SID


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (None, "pushed no SID"),
        ("None", "pushed no SID"),
        ("", "empty"),
        ("   \n", "empty"),
        (f" {SID}\n", "whitespace"),
        ("out-550e8400", "start with 'OUT-'"),
        ("OUT-../../trigger", "only letters, digits"),
        ("OUT-a/b", "only letters, digits"),
        ("OUT-" + "a" * 129, "at most 128"),
        (123, "must be a string"),
        ([SID, SID], ".expand(call_sid=...)"),
    ],
)
def test_call_sid_rejects_bad_value(value, fragment):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        validate_call_sid(value)
    assert fragment in str(excinfo.value)


# -- phone numbers and country codes ------------------------------------------------------------


def test_phone_number_keeps_e164():
    assert normalize_phone_number("+14155550120") == "+14155550120"


def test_phone_number_reads_national_with_country_code():
    assert normalize_phone_number("020 7183 8750", "GB") == "+442071838750"


def test_phone_number_strips_formatting():
    assert normalize_phone_number("+44 20 7183 8750") == "+442071838750"


@pytest.mark.parametrize(
    ("number", "country", "fragment"),
    [
        ("4155550120", None, "not in E.164 form"),
        ("+1415", None, "not a valid number"),
        ("+1 call me", None, "could not be parsed"),
        ("", None, "E.164 form"),
        (None, None, "E.164 form"),
        ("020 7183 8750", "US", "not a valid number in region US"),
    ],
)
def test_phone_number_rejects_bad_value(number, country, fragment):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        normalize_phone_number(number, country)
    assert fragment in str(excinfo.value)


def test_country_code_is_upper_cased():
    assert normalize_country_code(" gb ") == "GB"


def test_country_code_accepts_zz():
    assert normalize_country_code("ZZ") == "ZZ"


def test_country_code_empty_is_none():
    assert normalize_country_code("") is None


@pytest.mark.parametrize("value", ["UK", "XX", "GBR", 44])
def test_country_code_rejects_unknown_region(value):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        normalize_country_code(value)
    assert repr(value) in str(excinfo.value)


# -- encryption and metadata --------------------------------------------------------------------


@pytest.mark.parametrize("value", ["TLS/SRTP", "UDP/RTP"])
def test_encryption_accepts_documented_value(value):
    assert validate_encryption(value) == value


def test_encryption_unset_is_none():
    assert validate_encryption(None) is None


@pytest.mark.parametrize("value", ["tls/srtp", "TLS", "SRTP"])
def test_encryption_rejects_other_value(value):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        validate_encryption(value)
    assert "TLS/SRTP, UDP/RTP" in str(excinfo.value)


def test_metadata_accepts_json_string():
    assert validate_metadata('{"campaign": "x", "n": 1}') == {"campaign": "x", "n": 1}


def test_metadata_accepts_just_under_limit():
    # 19,497 JSON bytes are 25,996 bytes once base64-encoded.
    metadata = _metadata_of_json_size(19_497)
    assert validate_metadata(metadata) == metadata


def test_metadata_rejects_limit_exactly():
    # 19,500 JSON bytes are exactly 26,000 bytes once base64-encoded, and the API wants less.
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        validate_metadata(_metadata_of_json_size(19_500))
    assert f"{METADATA_MAX_BASE64_BYTES:,}" in str(excinfo.value)


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "must be a JSON object"),
        ([1, 2], "must be a JSON object"),
        ({1: "a"}, "keys must be strings"),
        ({"n": float("nan")}, "cannot be sent as JSON"),
        ({"when": object()}, "cannot be sent as JSON"),
    ],
)
def test_metadata_rejects_bad_value(value, fragment):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        validate_metadata(value)
    assert fragment in str(excinfo.value)


# -- statuses, failure_statuses and intervals ---------------------------------------------------


def test_terminal_statuses_are_the_documented_five():
    assert TERMINAL_STATUSES == {"completed", "failed", "no-answer", "busy", "cancelled"}


@pytest.mark.parametrize("status", list(OutboundCallStatus))
def test_call_status_is_terminal_matches_enum(status):
    expected = status.value in ("completed", "failed", "no-answer", "busy", "cancelled")
    assert CallStatus(SID, status.value).is_terminal is expected


def test_call_status_unknown_is_not_terminal():
    assert CallStatus(SID, "voicemail").is_terminal is False


def test_call_status_unknown_is_not_known():
    assert CallStatus(SID, "voicemail").is_known is False


def test_call_status_to_xcom_carries_sid_status_reason():
    xcom = CallStatus(SID, "busy", "line busy").to_xcom()
    assert xcom["call_sid"] == SID
    assert xcom["status"] == "busy"
    assert xcom["reason"] == "line busy"


@pytest.mark.parametrize(("status", "expected"), [("queued", 2.0), ("ringing", 2.0), ("in-progress", 20.0)])
def test_next_poll_interval_follows_status(status, expected):
    assert next_poll_interval(status, 2.0, 20.0) == expected


def test_next_poll_interval_unknown_status_uses_long_interval():
    assert next_poll_interval("voicemail", 2.0, 20.0) == 20.0


def test_failure_statuses_accepts_string():
    assert validate_failure_statuses("busy") == {"busy"}


def test_failure_statuses_rejects_non_terminal():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        validate_failure_statuses(["failed", "ringing"])
    assert "['ringing']" in str(excinfo.value)


@pytest.mark.parametrize(("poke", "in_progress"), [(0, 10), (3, -1), ("3", 10)])
def test_intervals_reject_non_positive(poke, in_progress):
    with pytest.raises(PolyAIInvalidInputError):
        validate_intervals(poke, in_progress)


# -- connection settings ------------------------------------------------------------------------


def test_settings_empty_host_uses_us_region():
    assert settings_from_connection(_connection(host=None)).base_url == DEFAULT_BASE_URL


def test_settings_strip_trailing_slash():
    settings = settings_from_connection(_connection(host="https://api.uk-1.platform.polyai.app/"))
    assert settings.base_url == "https://api.uk-1.platform.polyai.app"


def test_settings_keep_explicit_port():
    settings = settings_from_connection(_connection(host="https://polyai.example.com:8443"))
    assert settings.base_url == "https://polyai.example.com:8443"


def test_settings_allow_http_to_loopback():
    for host in ("http://127.0.0.1:8787", "http://localhost:8787", "http://[::1]:8787"):
        assert settings_from_connection(_connection(host=host)).base_url == host


@pytest.mark.parametrize(
    ("host", "fragment"),
    [
        ("api.uk-1.platform.polyai.app", "has no scheme"),
        ("https://api.uk-1.platform.polyai.app/outbound", "has a path, query or fragment"),
        ("https://api.uk-1.platform.polyai.app?region=uk", "has a path, query or fragment"),
        ("https://user:secret@api.uk-1.platform.polyai.app", "must not contain user info"),
        ("ftp://api.uk-1.platform.polyai.app", "is invalid"),
        ("http://api.uk-1.platform.polyai.app", "over plain HTTP"),
        ("http://localhost.example.com", "over plain HTTP"),
        ("https://api.uk-1.platform.polyai.app:abc", "invalid port"),
        ("https://api.uk-1.platform.polyai.app:70000", "invalid port"),
        ("https://api.uk-1.platform.polyai.app:0", "invalid port"),
    ],
)
def test_settings_reject_bad_host(host, fragment):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(host=host))
    assert fragment in str(excinfo.value)


def test_settings_user_info_message_hides_password():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(host="https://user:secret@api.uk-1.platform.polyai.app"))
    assert "secret" not in str(excinfo.value)


def test_settings_error_names_connection():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(host="api.example.com"))
    assert "'polyai_test'" in str(excinfo.value)


def test_settings_allow_insecure_http_when_set():
    settings = settings_from_connection(_connection(host="http://polyai.test", allow_insecure_http=True))
    assert settings.base_url == "http://polyai.test"


@pytest.mark.parametrize("password", [None, "", "   "])
def test_settings_reject_missing_token(password):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(password=password))
    assert "no connector token" in str(excinfo.value)


def test_settings_token_sent_in_header():
    settings = settings_from_connection(_connection(password=" tok-1 "))
    assert settings.headers[TOKEN_HEADER] == "tok-1"


def test_settings_token_absent_from_repr():
    assert "tok-secret" not in repr(settings_from_connection(_connection(password="tok-secret")))


def test_settings_defaults():
    settings = settings_from_connection(_connection())
    assert settings.timeout == DEFAULT_TIMEOUT_SECONDS
    assert settings.verify_ssl is True


@pytest.mark.parametrize("prefix", ["", "extra__polyai__"])
def test_settings_read_extras_in_both_spellings(prefix):
    settings = settings_from_connection(_connection(**{f"{prefix}timeout": "2.5", f"{prefix}verify_ssl": "false"}))
    assert settings.timeout == 2.5
    assert settings.verify_ssl is False


@pytest.mark.parametrize("value", ["0", "-1", "301", "soon"])
def test_settings_reject_bad_timeout(value):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(timeout=value))
    assert "'timeout'" in str(excinfo.value)


def test_settings_reject_bad_verify_ssl():
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        settings_from_connection(_connection(verify_ssl="maybe"))
    assert "'verify_ssl'" in str(excinfo.value)


@pytest.mark.parametrize(
    ("check", "value"),
    [(validate_call_sid, "OUT-" + "x/" * 3000), (normalize_phone_number, "1" * 100_000)],
    ids=["call_sid", "to_number"],
)
def test_long_rejected_value_is_cut_in_message(check, value):
    with pytest.raises(PolyAIInvalidInputError) as excinfo:
        check(value)

    message = str(excinfo.value)
    assert len(message) < 400
    assert f"({len(repr(value)):,} characters)" in message
