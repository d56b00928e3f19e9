"""The base of every config section: unknown keys are errors, assignments are validated.

Its own module so that sections defined next to their feature (pipeline/decontam/config.py)
and `pipeline.config`, which gathers them, share it without importing each other.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
