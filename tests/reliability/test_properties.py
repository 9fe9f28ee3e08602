"""Property-based tests: SID validation keeps URLs intact, response parsing fails only in known ways."""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlsplit

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_polyai.exceptions import PolyAIError, PolyAIInvalidInputError, PolyAITransientError
from airflow_provider_polyai.hooks.polyai import STATUS_PATH
from airflow_provider_polyai.hooks.responses import (
    MAX_RETRY_AFTER_SECONDS,
    error_for_response,
    parse_call_sid,
    parse_call_status,
    parse_retry_after,
)
from airflow_provider_polyai.validation import validate_call_sid

BASE_URL = "https://api.us-1.platform.polyai.app"
SID = "OUT-550e8400-e29b-41d4-a716-446655440000"

PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text that leans on the characters that could change a URL, so hypothesis tries them often.
url_text = st.text(alphabet=st.sampled_from("/.?#%&=;:@+ \\\t\nOUTout-_aZ09é\x00"), max_size=40) | st.text(max_size=40)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


def _status_url(call_sid: str) -> str:
    return BASE_URL + STATUS_PATH.format(call_sid=call_sid)


@PROPERTY_SETTINGS
@given(st.one_of(url_text.map(lambda text: "OUT-" + text), url_text))
def test_accepted_sid_stays_one_path_segment(candidate):
    try:
        call_sid = validate_call_sid(candidate)
    except PolyAIInvalidInputError:
        return

    parts = urlsplit(_status_url(call_sid))
    assert parts.path == f"/outbound/status/{call_sid}"
    assert parts.query == ""
    assert parts.fragment == ""
    assert parts.netloc == "api.us-1.platform.polyai.app"
    assert "." not in call_sid
    assert "%" not in call_sid


@PROPERTY_SETTINGS
@given(st.uuids())
def test_every_out_uuid_accepted(value: uuid.UUID):
    call_sid = f"OUT-{value}"

    assert validate_call_sid(call_sid) == call_sid


@PROPERTY_SETTINGS
@given(st.text(max_size=200) | json_values.map(str))
def test_parse_call_status_raises_only_provider_errors(body):
    try:
        status = parse_call_status(SID, body)
    except PolyAITransientError:
        return

    assert isinstance(status.status, str)
    assert status.status != ""
    assert isinstance(status.reason, str)


@PROPERTY_SETTINGS
@given(json_values)
def test_parse_call_status_handles_any_json(value):
    body = json.dumps(value)
    try:
        parse_call_status(SID, body)
    except PolyAIError:
        pass


@PROPERTY_SETTINGS
@given(st.text(max_size=200) | json_values.map(json.dumps))
def test_parse_call_sid_raises_only_provider_errors(body):
    try:
        call_sid = parse_call_sid(body, subject="the call to +14155552671")
    except PolyAIError:
        return

    assert isinstance(call_sid, str)
    assert call_sid != ""


@PROPERTY_SETTINGS
@given(
    status_code=st.integers(min_value=300, max_value=599),
    body=st.text(max_size=300) | json_values.map(json.dumps),
    content_type=st.sampled_from(["", "application/json", "text/html", "text/plain; charset=utf-8"]),
    retry_after=st.none() | st.text(max_size=40) | st.floats(allow_nan=True).map(str) | st.integers().map(str),
)
def test_error_for_response_always_returns_provider_error(status_code, body, content_type, retry_after):
    error = error_for_response(
        status_code, body, content_type=content_type, retry_after=retry_after, subject=f"call {SID}", conn_id="c"
    )

    assert isinstance(error, PolyAIError)
    assert SID in str(error)
    if isinstance(error, PolyAITransientError) and error.retry_after is not None:
        assert error.retry_after >= 0.0
        assert error.retry_after <= MAX_RETRY_AFTER_SECONDS


@PROPERTY_SETTINGS
@given(
    st.none()
    | st.text(max_size=60)
    | st.floats(allow_nan=True, allow_infinity=True).map(str)
    | st.integers(min_value=-(10**30), max_value=10**30).map(str)
    | st.datetimes().map(lambda moment: moment.strftime("%a, %d %b %Y %H:%M:%S GMT"))
)
def test_retry_after_is_bounded(value):
    seconds = parse_retry_after(value)

    if seconds is not None:
        assert seconds >= 0.0
        assert seconds <= MAX_RETRY_AFTER_SECONDS


@PROPERTY_SETTINGS
@given(st.integers(min_value=500, max_value=599), st.text(max_size=300))
def test_server_errors_never_echo_html_body(status_code, page):
    body = f"<html><body>{page}</body></html>"

    error = error_for_response(status_code, body, content_type="text/html", subject=f"call {SID}", conn_id="c")

    assert isinstance(error, PolyAITransientError)
    assert "<html>" not in str(error)
