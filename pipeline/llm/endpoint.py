"""A resolved model endpoint: where requests go once a backend is up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LLMEndpoint:
    """Base URL (ending in /v1), the model name to send, and the API key."""

    base_url: str
    model: str
    api_key: str = "not-needed"
