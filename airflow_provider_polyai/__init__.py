"""Apache Airflow provider for PolyAI outbound voice-agent calls."""

from __future__ import annotations

__version__ = "0.1.0"
