"""Prompt templates: Jinja files under `prompts/`, rendered by name. No prompt text in code."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import jinja2

PROMPTS_DIR = Path(__file__).resolve().parent.parent / "prompts"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(PROMPTS_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=False,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, **variables: object) -> str:
    """Render `prompts/<template>` with `variables`; a missing variable is an error."""
    return _env().get_template(template).render(**variables).strip()
