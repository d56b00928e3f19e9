"""Structured output: a JSON schema sent as `response_format`, in the form each server takes.

With `llm.response_format: json_schema` every strategy asks for a JSON object that follows
its own schema (OSS-Instruct, solve, Self-Instruct, Evol-Instruct, Case2Code), and the
server constrains decoding to it:

- vLLM (`backend: vllm`, or `openai` pointed at a vLLM server) and the OpenAI API take
  `{"type": "json_schema", "json_schema": {"name", "strict", "schema"}}` (vLLM enforces it
  with its guided-decoding backend);
- llama-cpp-python's server (`backend: embedded`) takes `{"type": "json_object",
  "schema": ...}` and turns the schema into a grammar.

A server that ignores `response_format` still gets a prompt that asks for the same JSON;
every parser also falls back to the plain-text reading, so such replies are not lost.
Replies are read with `pipeline.parse.first_json_object` (fences, prose, raw newlines and
a missing closing brace tolerated).
"""

from __future__ import annotations

from typing import Any


def schema_response_format(backend: str, name: str, schema: dict[str, Any]) -> dict[str, Any]:
    """`response_format` asking for `schema`, for the server behind `backend`."""
    if backend == "embedded":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True,
                                                   "schema": schema}}

