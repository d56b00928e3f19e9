"""The dataset card: `DIR/dataset/README.md`, the Hugging Face Hub's form.

Its YAML front matter (`huggingface_hub.DatasetCardData`) has the license
(`output.license`), task category, languages, tags, the Hub's size category for the row
count, `configs` and `dataset_info`. `configs` names the Arrow files `save_to_disk` wrote
for each split, so `datasets.load_dataset(DIR/dataset)` and a repository that holds the
folder as it is (`hf upload`) load the same splits as `load_from_disk`; `dataset_info` is
written by `datasets`' own code, the form `push_to_hub` writes. The body
(card_template.md.jinja2) says how the data was made and what every filter did, from
stats.json and the config: counts per split, strategy and reject reason, dedup and
decontamination settings and hits, the scorer and the selection's funnel, and the
fingerprints of the config and of every stage.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import jinja2
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard, DatasetCardData

from pipeline import __version__
from pipeline.config import PipelineConfig
from pipeline.fingerprint import FILE as FINGERPRINTS

TEMPLATE = "card_template.md.jinja2"
CONFIG_NAME = "default"
#: The Hub's size categories (datasets ships the list as utils/resources/size_categories.json),
#: smallest first; each upper bound is ten times the last, from 1K.
SIZE_CATEGORIES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M",
                   "100M<n<1B", "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T")
#: The natural language of the instructions (the prompts are English) and the Hub's
#: language code for programming languages.
LANGUAGES = ["en", "code"]
#: What each global dedup step checks, by stage name.
_DEDUP = {"dedup_exact": "exact: normalised instruction and normalised code",
          "dedup": "ROUGE-L of instructions",
          "dedup_minhash": "MinHash LSH of code (identifier-normalised token 5-grams)"}
_METHODS = ("ngram", "embedding", "execution")


def size_category(n: int) -> str:
    """The Hub's size category of a dataset with `n` rows (1000 rows is `1K<n<10K`)."""
    for exp, category in enumerate(SIZE_CATEGORIES[:-1], start=3):
        if n < 10**exp:
            return category
    return SIZE_CATEGORIES[-1]


def data_files(splits: list[str]) -> list[dict[str, str]]:
    """`configs` data files: the Arrow shards `save_to_disk` writes under each split."""
    return [{"split": s, "path": f"{s}/data-*.arrow"} for s in splits]


def listed_splits(dd: datasets.DatasetDict) -> list[str]:
    """The splits the card's `configs` names: those with rows (`load_dataset` fails on the
    whole dataset with "corresponds to no data" when one split is empty)."""
    return [name for name, d in dd.items() if d.num_rows]


def card_data(dd: datasets.DatasetDict, ds_dir: Path, cfg: PipelineConfig) -> DatasetCardData:
    """The card's YAML front matter for the dataset saved in `ds_dir`."""
    total = sum(d.num_rows for d in dd.values())
    gen = cfg.generation
    tags = ["code", "synthetic", "sft", "execution-verified", gen.language,
            *(s.replace("_", "-") for s in gen.strategies)]
    data = DatasetCardData(license=cfg.output.license, language=list(LANGUAGES),
                           task_categories=["text-generation"],
                           size_categories=[size_category(total)],
                           tags=list(dict.fromkeys(tags)), pretty_name=_title(cfg))
    listed = listed_splits(dd)
    splits = SplitDict()
    for name in listed:
        splits.add(SplitInfo(name=name, num_bytes=dd[name].data.nbytes,
                             num_examples=dd[name].num_rows))
    files = sum(p.stat().st_size for name in listed for p in (ds_dir / name).glob("data-*.arrow"))
    info = DatasetInfo(features=next(iter(dd.values())).features, splits=splits,
                       download_size=files, dataset_size=sum(s.num_bytes for s in
                                                             splits.values()))
    DatasetInfosDict({CONFIG_NAME: info}).to_dataset_card_data(data)
    if listed:
        MetadataConfigs({CONFIG_NAME: {"data_files": data_files(listed),
                                       "description": files_version(ds_dir, listed)}}
                        ).to_dataset_card_data(data)
    return data


def files_version(ds_dir: Path, splits: list[str]) -> str:
    """A tag of these Arrow files (names, sizes, mtimes) for the config's `description`.

    `load_dataset` of a local folder whose card has `configs` caches what it built under
    a hash of the card's `dataset_info` and the config, not of the files (datasets 5.2):
    every run's folder is called `dataset`, so a rerun whose sizes come out the same would
    be served the previous run's rows. The config's description is in that hash; this tag
    changes whenever the files do (as the mtimes datasets itself checks without
    `configs`). `push_to_hub` replaces the config, tag and all."""
    h = hashlib.sha256()
    for split in splits:
        for p in sorted((ds_dir / split).glob("data-*.arrow")):
            st = p.stat()
            h.update(f"{split}/{p.name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return f"Arrow files of pipeline's save_to_disk, version {h.hexdigest()[:16]}"


def _title(cfg: PipelineConfig) -> str:
    names = ", ".join(s.replace("_", "-") for s in cfg.generation.strategies)
    return f"Verified synthetic {cfg.generation.language} instructions ({names})"


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _drops(counters: dict[str, Any]) -> dict[str, int]:
    return {k.removeprefix("dropped_"): int(v) for k, v in sorted(counters.items())
            if k.startswith("dropped_") and v}


def _stages(stats: dict[str, Any]) -> list[dict[str, Any]]:
    stages = stats.get("stages", {})
    return [{"name": name, "in": stages.get(name, {}).get("in", 0),
             "out": stages.get(name, {}).get("out", 0),
             "drops": _drops(stages.get(name, {}))}
            for name in stats.get("stage_order", list(stages))]


def _decontam(stats: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    dc = cfg.decontam
    stages = stats.get("stages", {})
    hits = []
    for stage in ("decontam_instruction", "decontam"):
        for key, n in sorted(stages.get(stage, {}).items()):
            bench, _, method = key.removeprefix("contaminated_").rpartition("_")
            if key.startswith("contaminated_") and method in _METHODS and n:
                hits.append({"stage": stage, "benchmark": bench, "method": method, "n": n})
    thresholds = {"ngram": f"instruction {dc.text_ngram}-grams, code {dc.code_ngram}-token "
                           f"n-grams, containment >= {dc.ngram_threshold}",
                  "embedding": f"cosine >= {dc.embedding_threshold} (instructions), >= "
                               f"{dc.code_embedding_threshold} (code)",
                  "execution": f"the {dc.execution_top_k} nearest items' tests pass and the "
                               f"code agrees with their solution on >= "
                               f"{dc.execution_agreement:.0%} of altered inputs"}
    checked = [{"stage": s, "in": stages[s].get("in", 0),
                "dropped": stages[s].get("dropped_contaminated", 0)}
               for s in ("decontam_instruction", "decontam") if s in stages]
    return {"enabled": dc.enabled,
            "benchmarks": [b if isinstance(b, str) else b.name for b in dc.benchmarks],
            "methods": [{"name": m, "rule": thresholds[m]} for m in dc.methods],
            "checked": checked, "hits": hits}


def _dedup(stats: dict[str, Any], cfg: PipelineConfig) -> list[dict[str, Any]]:
    dd, stages = cfg.dedup, stats.get("stages", {})
    settings = {"dedup_exact": "on" if dd.exact else "off",
                "dedup": (f"ROUGE-L >= {cfg.generation.dedup_threshold}"
                          if cfg.generation.dedup_threshold is not None else "off"),
                "dedup_minhash": (f"Jaccard >= {dd.minhash_threshold}, {dd.num_perm} "
                                  "permutations" if dd.minhash_threshold is not None
                                  else "off")}
    rows = []
    for name, method in _DEDUP.items():
        c = stages.get(name)
        rows.append({"stage": name, "method": method, "setting": settings[name],
                     "ran": c is not None, "in": (c or {}).get("in", 0),
                     "dropped": (c or {}).get("dropped_duplicate", 0),
                     "this_run": (c or {}).get("duplicate_of_this_run", 0),
                     "earlier_run": (c or {}).get("duplicate_of_earlier_run", 0)})
    return rows


def _selection(stats: dict[str, Any], cfg: PipelineConfig) -> dict[str, Any]:
    sel, stages = cfg.select, stats.get("stages", {})
    score, select = stages.get("score", {}), stages.get("select", {})
    funnel = [{"group": g, **f} for g, f in select.get("funnel", {}).items() if "scored" in f]
    return {"enabled": bool(select), "scorer": stats.get("scorer"), "policy": sel.policy,
            "keep": (f"the top {sel.keep} of each group" if isinstance(sel.keep, int)
                     else f"{sel.keep:.0%} of each group"), "group_by": sel.group_by,
            "band": list(sel.band) if sel.policy == "band" else None,
            "scored": score.get("scored", 0), "score_in": score.get("in", 0),
            "reused": score.get("reused", 0),
            "unscorable": score.get("dropped_unscorable", 0),
            "select_in": select.get("in", 0), "select_out": select.get("out", 0),
            "not_selected": select.get("dropped_not_selected", 0), "funnel": funnel}


def _fingerprints(out_dir: Path) -> dict[str, Any]:
    path = out_dir / FINGERPRINTS
    if not path.is_file():
        return {"file": None, "sha256": None, "stages": []}
    fp = json.loads(path.read_text())
    rows = []
    for name in fp.get("order", list(fp.get("stages", {}))):
        st = fp["stages"][name]
        blob = json.dumps(st.get("config", {}), sort_keys=True).encode()
        rows.append({"name": name, "code": st.get("code"), "model": st.get("model"),
                     "config": hashlib.sha256(blob).hexdigest()[:16],
                     "templates": st.get("templates", {})})
    return {"file": str(FINGERPRINTS), "sha256": _sha256(path), "stages": rows}


def context(out_dir: Path, dd: datasets.DatasetDict, stats: dict[str, Any],
            cfg: PipelineConfig) -> dict[str, Any]:
    """Everything the card's body shows, from stats.json, the config and the run's files."""
    splits = {name: d.num_rows for name, d in dd.items()}
    by_split = stats.get("kept_by_split_strategy") or {"train": stats.get("kept_by_strategy",
                                                                          {})}
    strategies = sorted({s for counts in by_split.values() for s in counts})
    return {
        "title": _title(cfg), "cfg": cfg, "stats": stats, "version": __version__,
        "datasets_version": datasets.__version__,
        "total": sum(splits.values()), "splits": splits,
        "size_category": size_category(sum(splits.values())),
        "kept_by_strategy": [{"strategy": s, "splits": {k: by_split.get(k, {}).get(s, 0)
                                                        for k in splits},
                              "total": sum(by_split.get(k, {}).get(s, 0) for k in splits)}
                             for s in strategies],
        "rejected": stats.get("rejected", 0),
        "rejected_by_reason": stats.get("rejected_by_reason", {}),
        "funnel": stats.get("by_strategy", {}),
        "stages": _stages(stats),
        "decontam": _decontam(stats, cfg), "dedup": _dedup(stats, cfg),
        "selection": _selection(stats, cfg),
        "config_sha256": _sha256(out_dir / "config.yaml"),
        "fingerprints": _fingerprints(out_dir),
        "seeds_where": _seeds_where(cfg),
        "data_files": data_files(listed_splits(dd)),
        "empty_splits": [name for name, n in splits.items() if not n],
    }


def _seeds_where(cfg: PipelineConfig) -> str | None:
    """Where the seeds came from, where that means something to a reader of the card: a
    dataset name or a repository URL, not a path on the machine that ran it."""
    path = cfg.seeds.path
    if path and (cfg.seeds.source == "hf_dataset" or "://" in path):
        return path
    return None


def _basename(value: str) -> str:
    return Path(value.rstrip("/")).name or value


def _cell(value: Any) -> str:
    """A value fit for a markdown table cell."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_body(ctx: dict[str, Any]) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).resolve().parent),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True, autoescape=False, keep_trailing_newline=True)
    env.filters["cell"] = _cell
    env.filters["basename"] = _basename
    return env.get_template(TEMPLATE).render(**ctx)


def write_card(out_dir: Path, stats: dict[str, Any], cfg: PipelineConfig) -> Path:
    """Write `out_dir/dataset/README.md` (the module docstring says what it holds) for the
    dataset `write_outputs` saved there, with `stats` (stats.json's contents) and the
    run's config. Returns the card's path."""
    ds_dir = out_dir / "dataset"
    dd = datasets.load_from_disk(str(ds_dir))  # memory-mapped: only the metadata is read
    if not isinstance(dd, datasets.DatasetDict):
        raise ValueError(f"{ds_dir} holds a single Dataset, not the DatasetDict of a run")
    body = render_body(context(out_dir, dd, stats, cfg))
    card = DatasetCard(f"---\n{card_data(dd, ds_dir, cfg).to_yaml()}\n---\n\n{body}")
    path = ds_dir / "README.md"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(str(card), encoding="utf-8")
    tmp.replace(path)
    return path
