"""The run report: a summary of a run's output directory, as a self-contained HTML page
(`write_report`, OUT/report.html) and as plain text lines (`summary_lines`, for
`python -m pipeline inspect OUTPUT`).

Modules: `columns` reads stats.json and the few columns the summary needs (memory-mapped
Arrow, no row objects), `summary` computes the figures, `records` picks the bounded sample
of records the page shows, `charts` draws them (matplotlib, inline SVG), `html` renders
report.html.jinja2, `text` prints the same figures as lines.
"""

from pipeline.report.html import write_report
from pipeline.report.text import summary_lines

__all__ = ["summary_lines", "write_report"]
