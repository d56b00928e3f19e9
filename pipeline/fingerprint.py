"""What each stage's work depends on, recorded per run, and `run --dry-run`'s account of
what a rerun or an `--extend` would redo and why.

Finished work is found by its content (pipeline/llm/cache.py, pipeline/sandbox/
verdict_cache.py, the score store): a request whose prompt, model or parameters changed is
a new key and is sent again; one that did not is served. So what is redone follows from
what changed, and this module names it before anything runs. A stage's fingerprint has:

- `config`: its settings (the pydantic sections and plain values it holds; cache paths,
  batch sizes, server URLs, timeouts and retries left out: they change where work is kept
  or how it is done, not the result);
- `model`: the model its requests name;
- `templates`: the sha256 of each prompt template its code names (`*.jinja2` in the
  source of its class and of their bases in `pipeline`);
- `code`: the sha256 of the source of those modules.

`OUTPUT/state/fingerprints.json` holds them; `OUTPUT/state/source_ids.txt` the ids of
the source samples (pipeline/sources_file.py).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from pipeline.stage import Stage

PROMPTS = Path(__file__).resolve().parent.parent / "prompts"
FILE = Path("state") / "fingerprints.json"
#: Left out: runtime state, and where work is kept or how it is cut.
_SKIP = {"counters", "ticks", "report", "observed", "batch_size", "cache_path", "cache",
         "reuse", "endpoint"}
#: Per config section, settings that say how work is done, not what it produces: a
#: request's key has no server URL, timeout or retry count in it; a verdict's has no
#: daemon address or worker count.
_HOW = {"LLMConfig": {"base_url", "api_key_env", "max_in_flight", "timeout_s", "max_retries",
                      "backoff_base_s", "backoff_max_s", "abort_after_failures"},
        "EmbeddedConfig": {"startup_timeout_s", "max_in_flight"},
        "VllmConfig": {"startup_timeout_s", "port"},
        "SandboxConfig": {"docker_host", "workers"}}
_TEMPLATE = re.compile(r"[\w/]+\.jinja2")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _plain(value: Any) -> Any:
    """A JSON-able view of a setting; None for what is a runtime handle."""
    if isinstance(value, BaseModel):
        how = _HOW.get(type(value).__name__, set())
        return {k: _plain(getattr(value, k)) for k in type(value).model_fields
                if k not in how and k not in _SKIP}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if k not in _SKIP}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(v) for v in value)
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return None


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else k))
    return out


def stage_fingerprint(stage: Stage) -> dict[str, Any]:
    config = {k: _plain(v) for k, v in vars(stage).items()
              if not k.startswith("_") and k not in _SKIP}
    modules = {inspect.getmodule(c) for c in type(stage).__mro__
               if c.__module__.startswith("pipeline.")}
    sources = sorted((m.__name__, inspect.getsource(m)) for m in modules if m is not None)
    templates = {}
    for _, src in sources:
        for name in _TEMPLATE.findall(src):
            for path in sorted(PROMPTS.glob(f"**/{Path(name).name}")):
                templates[str(path.relative_to(PROMPTS))] = _sha(path.read_bytes())
    endpoint = getattr(stage, "endpoint", None)
    return {"config": _flat({k: v for k, v in config.items() if v is not None}),
            "model": getattr(endpoint, "model", None),
            "templates": dict(sorted(templates.items())),
            "code": _sha("".join(src for _, src in sources).encode())}


def fingerprints(stages: list[Stage]) -> dict[str, Any]:
    return {"stages": {s.name: stage_fingerprint(s) for s in stages},
            "order": [s.name for s in stages]}


def write_fingerprints(out_dir: Path, stages: list[Stage]) -> None:
    path = out_dir / FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(fingerprints(stages), indent=1))
    tmp.replace(path)


def _why(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for key in sorted(set(old["config"]) | set(new["config"])):
        a, b = old["config"].get(key), new["config"].get(key)
        if a != b:
            out.append(f"{key}: {json.dumps(a)} -> {json.dumps(b)}")
    if old["model"] != new["model"]:
        out.append(f"model: {old['model']} -> {new['model']}")
    for name in sorted(set(old["templates"]) | set(new["templates"])):
        if old["templates"].get(name) != new["templates"].get(name):
            out.append(f"prompt template {name} changed")
    if old["code"] != new["code"] and not out:
        out.append("its code changed (what it sends is unchanged where its inputs are)")
    return out


def explain(old: dict[str, Any] | None, new: dict[str, Any], old_ids: list[str],
            new_ids: list[str]) -> list[str]:
    """Lines saying, stage by stage, what a run with `new` would redo against `old`
    (fingerprints), and which sources are new (`*_ids`: source sample ids)."""
    if old is None:
        return ["no earlier fingerprints: everything not already in the stores is done"]
    lines = []
    gone = len(set(old_ids) - set(new_ids))
    added = len(set(new_ids) - set(old_ids))
    lines.append(f"sources: {len(new_ids)} ({added} new, {gone} no longer present, "
                 f"{len(new_ids) - added} reused)")
    changed = False
    for name in new["order"]:
        fp, was = new["stages"][name], old["stages"].get(name)
        if was is None:
            lines.append(f"  {name}: new stage: done for every sample")
            changed = True
            continue
        why = _why(was, fp)
        if why:
            lines.append(f"  {name}: REDONE for every sample it sees: " + "; ".join(why))
            changed = True
        elif changed:
            lines.append(f"  {name}: unchanged; redone only for samples an earlier change "
                         "alters (the rest is served from the stores)")
        else:
            lines.append(f"  {name}: unchanged: reused" + (", plus the new sources"
                                                           if added else ""))
    for name in old["order"]:
        if name not in new["stages"]:
            lines.append(f"  {name}: removed")
    return lines
