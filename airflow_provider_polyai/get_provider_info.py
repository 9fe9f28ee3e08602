"""Provider metadata that Airflow reads through the ``apache_airflow_provider`` entry point."""

from __future__ import annotations

from typing import Any

from airflow_provider_polyai import __version__

# The form fields below are stored in the connection's extra JSON under these names. The hook reads
# them with the same defaults, so a connection made without the form behaves like one made with it.
CONNECTION_FIELDS: dict[str, Any] = {
    "timeout": {
        "label": "Request timeout (seconds)",
        "schema": {"type": ["number", "null"], "default": 10},
        "description": "Timeout of each HTTP request to PolyAI, in seconds.",
    },
    "verify_ssl": {
        "label": "Verify TLS certificates",
        "schema": {"type": ["boolean", "null"], "default": True},
        "description": "Switch off only for a test server with a self-signed certificate.",
    },
    "allow_insecure_http": {
        "label": "Allow plain HTTP to a remote host",
        "schema": {"type": ["boolean", "null"], "default": False},
        "description": "Send the connector token over http:// to a host other than localhost. Unsafe.",
    },
    # API generations. No defaults: an empty field means the primary generation, and a stored
    # default would be written into every connection saved from the form.
    "api_generation": {
        "label": "API generation",
        "schema": {"type": ["string", "null"], "enum": ["outbound", "v1", "agents"]},
        "description": (
            "PolyAI API the project uses: outbound (POST /outbound/trigger, the default when empty), "
            "v1 (/v1/outbound-calling) or agents (the Agents API, X-API-KEY in the password field)."
        ),
    },
    "agent_id": {
        "label": "Agent ID (agents only)",
        "schema": {"type": ["string", "null"]},
        "description": "Agents API only, required: the agent that places the calls.",
    },
    "environment": {
        "label": "Agent environment (agents only)",
        "schema": {"type": ["string", "null"], "enum": ["sandbox", "pre-release", "live"]},
        "description": "Agents API only, required: environment calls are placed and read in.",
    },
    "variant_id": {
        "label": "Variant ID (agents only)",
        "schema": {"type": ["string", "null"]},
        "description": "Agents API only, optional: variant to call with; empty uses the default.",
    },
}

FIELD_BEHAVIOUR: dict[str, Any] = {
    "hidden-fields": ["schema", "login", "port"],
    "relabeling": {"host": "API base URL", "password": "Connector token"},
    "placeholders": {
        "host": "https://api.us-1.platform.polyai.app",
        "password": "connector token from PolyAI",
    },
}


def get_provider_info() -> dict[str, Any]:
    """Return the provider's hooks, triggers, sensors, operators and connection type."""
    return {
        "package-name": "airflow-provider-polyai",
        "name": "PolyAI",
        "description": "Place PolyAI outbound voice-agent calls and wait for their outcome.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "PolyAI",
                "external-doc-url": "https://docs.poly.ai/",
                "tags": ["service"],
            }
        ],
        "hooks": [
            {"integration-name": "PolyAI", "python-modules": ["airflow_provider_polyai.hooks.polyai"]},
        ],
        "triggers": [
            {
                "integration-name": "PolyAI",
                "python-modules": [
                    "airflow_provider_polyai.triggers.outbound_call",
                    "airflow_provider_polyai.triggers.outbound_calls_batch",
                ],
            },
        ],
        "sensors": [
            {
                "integration-name": "PolyAI",
                "python-modules": [
                    "airflow_provider_polyai.sensors.outbound_call",
                    "airflow_provider_polyai.sensors.outbound_calls_batch",
                ],
            },
        ],
        "operators": [
            {
                "integration-name": "PolyAI",
                "python-modules": ["airflow_provider_polyai.operators.outbound_call"],
            },
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_polyai.hooks.polyai.PolyAIHook",
                "hook-name": "PolyAI",
                "connection-type": "polyai",
                "conn-fields": CONNECTION_FIELDS,
                "ui-field-behaviour": FIELD_BEHAVIOUR,
            }
        ],
    }
