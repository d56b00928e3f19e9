"""Model access over the OpenAI-compatible HTTP API."""
