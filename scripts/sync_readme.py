"""Rewrite the README's config reference from the config models (`make` it after a change)."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config import reference_markdown

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

text = README.read_text()
new = re.sub(re.escape(START) + r".*?" + re.escape(END),
             lambda _: f"{START}\n{reference_markdown()}\n{END}", text, flags=re.S)
README.write_text(new)
print("README config reference updated")
