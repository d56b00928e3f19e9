"""The dataset card (pipeline/card.py): OUT/dataset/README.md of a real run parses as a Hub
card, its metadata is what `datasets` reads (size category, configs, features), the
folder loads through it with `load_dataset`, and its body has the run's counts and what
every filter did, as stats.json and the config say."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import pytest
import yaml
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from huggingface_hub import DatasetCard

from pipeline.card import SIZE_CATEGORIES, files_version, size_category, write_card
from pipeline.config import OutputConfig, PipelineConfig, load_config, parse_config
from pipeline.executor.local import LocalExecutor
from pipeline.output import write_outputs
from pipeline.record import ExecStatus, Execution, Sample
from pipeline.run import run_pipeline
from pipeline.scoring.select import SelectStep
from tests.fake_openai_server import FakeOpenAIServer, Reply
from tests.test_run_e2e import model, write_seeds

RESOURCES = Path(datasets.__file__).parent / "utils" / "resources"


def _front_matter(text: str) -> dict[str, Any]:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n", 2)[1])


def _check_metadata(path: Path, stats: dict[str, Any], cache: Path) -> DatasetCard:
    """What the Hub and `datasets` read from the card, against the dataset beside it
    (`cache`: load_dataset's cache directory)."""
    text = path.read_text(encoding="utf-8")
    meta = _front_matter(text)
    card = DatasetCard.load(path)
    assert card.data.to_dict() == meta
    sizes = json.loads((RESOURCES / "size_categories.json").read_text())
    languages = json.loads((RESOURCES / "languages.json").read_text())
    assert meta["size_categories"] == [size_category(stats["kept"])]
    assert meta["size_categories"][0] in sizes
    assert set(meta["language"]) <= set(languages)
    assert meta["task_categories"] == ["text-generation"] and meta["license"]
    dd = datasets.load_from_disk(str(path.parent))
    with_rows = [name for name, d in dd.items() if d.num_rows]
    configs = MetadataConfigs.from_dataset_card_data(card.data)
    assert configs == {"default": {"data_files": [
        {"split": s, "path": f"{s}/data-*.arrow"} for s in with_rows],
        "description": files_version(path.parent, with_rows)}}
    [info] = DatasetInfosDict.from_dataset_card_data(card.data).values()
    assert info.features == dd["train"].features
    assert {s.name: s.num_examples for s in info.splits.values()} == {
        s: stats["kept_by_split"][s] for s in with_rows}
    # The consumer: load_dataset reads the folder through the card's configs.
    loaded = datasets.load_dataset(str(path.parent), cache_dir=str(cache))
    assert {s: d.to_list() for s, d in loaded.items()} == {s: dd[s].to_list() for s in with_rows}
    return card


# HumanEval/0 word for word: the n-gram method catches it (the slower embedding and
# execution methods have their own tests).
COPY = """### Problem
Check if in given list of numbers, are any two numbers closer to each other than
given threshold.

### Solution
```python
def has_close_elements(numbers, threshold):
    for idx, elem in enumerate(numbers):
        for idx2, elem2 in enumerate(numbers):
            if idx != idx2:
                distance = abs(elem - elem2)
                if distance < threshold:
                    return True

    return False
```

### Tests
```python
assert has_close_elements([1.0, 2.0, 3.0], 0.5) is False
assert has_close_elements([1.0, 2.8, 3.0, 4.0, 5.0, 2.0], 0.3) is True
```
"""


def _copying_model(request: dict[str, Any]) -> Reply:
    if "def clamp" in request["messages"][-1]["content"]:
        return Reply.ok(COPY)
    return model(request)  # tests/test_run_e2e.py's: one good, one prose, one failing


def _row(text: str, *cells: Any) -> bool:
    return ("| " + " | ".join(str(c) for c in cells) + " |") in text


@pytest.mark.docker
def test_card_of_a_real_run_has_its_counts_filters_and_fingerprints(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with FakeOpenAIServer(handler=_copying_model) as srv:
        cfg = parse_config({
            "select": {"enabled": False},  # the selection section has its own test below
            "seeds": {"source": "directory", "path": str(write_seeds(tmp_path / "src")),
                      "max_seeds": 10},
            "llm": {"backend": "openai", "base_url": srv.base_url, "model": "fake",
                    "max_retries": 1, "backoff_base_s": 0.01, "timeout_s": 5},
            "decontam": {"methods": ["ngram"]},
            "ray": {"executor": "local"},
        })
        run_pipeline(cfg, out)
    stats = json.loads((out / "stats.json").read_text())
    path = write_card(out, stats, load_config(out / "config.yaml"))
    assert path == out / "dataset" / "README.md"
    card = _check_metadata(path, stats, tmp_path / "hf")
    assert card.data.license == PipelineConfig().output.license
    text = card.text

    for split, n in stats["kept_by_split"].items():
        assert _row(text, split, n)
    for strategy, n in stats["kept_by_strategy"].items():
        per = [stats["kept_by_split_strategy"][s].get(strategy, 0) for s in stats["kept_by_split"]]
        assert _row(text, strategy, *per, n)
    assert stats["rejected_by_reason"]  # the fake model's prose and its failing solution
    for reason, n in stats["rejected_by_reason"].items():
        assert _row(text, reason, n)
    assert "`fake` (openai backend)" in text

    assert stats["kept"] == 1
    hits = {k: v for k, v in stats["stages"]["decontam"].items() if k.startswith("contam")}
    assert hits == {"contaminated_humaneval_ngram": 1}, stats["stages"]["decontam"]
    for key, n in hits.items():
        bench, _, method = key.removeprefix("contaminated_").rpartition("_")
        assert _row(text, bench, method, "decontam", n)
    dc = stats["stages"]["decontam"]
    assert _row(text, "decontam", dc["in"], dc["dropped_contaminated"])
    assert "containment >= 0.5" in text and "| embedding |" not in text

    for name, setting in [("dedup_exact", "on"), ("dedup", "ROUGE-L >= 0.7"),
                          ("dedup_minhash", "Jaccard >= 0.85, 128 permutations")]:
        c = stats["stages"][name]
        assert f"| {name} | " in text and f" | {setting} | {c['in']} | " \
            f"{c.get('dropped_duplicate', 0)} | " in text
    assert "Off (`select.enabled: false`)" in text
    for s in stats["stage_order"]:
        st = stats["stages"][s]
        assert f"| {s} | {st['in']} | {st['out']} | " in text

    config_sha = hashlib.sha256((out / "config.yaml").read_bytes()).hexdigest()
    assert f"sha256 `{config_sha}`" in text
    fps = json.loads((out / "state" / "fingerprints.json").read_text())
    for name, fp in fps["stages"].items():
        assert f"| {name} | `{fp['code']}` |" in text
    assert "oss_instruct.jinja2` `" + fps["stages"]["oss_instruct"]["templates"][
        "oss_instruct.jinja2"] in text


def _scored(i: int) -> Sample:
    s = Sample(strategy="oss_instruct", instruction=f"task {i}", response=f"answer {i}",
               code=f"def f{i}(): ...", tests="assert True",
               scores={"loss": 0.5 + i / 10, "loss_alone": 1.0 + i / 10,
                       "ifd": (0.5 + i / 10) / (1.0 + i / 10)})
    s.assign_id()
    return s


def test_card_records_the_scorer_policy_and_funnel_of_the_selection(tmp_path: Path) -> None:
    """The selection's real report (SelectStep on scored samples) written by write_outputs."""
    cfg = parse_config({"select": {"policy": "max_loss", "keep": 3, "group_by": "none"},
                        "decontam": {"enabled": False},
                        "output": {"license": "apache-2.0", "validation_share": 0.5}})
    result = LocalExecutor().run([SelectStep(cfg.select, cfg.seed)],
                                 [_scored(i) for i in range(10)])
    stats = {"stage_order": ["select"], "stages": result.stage_stats, "scorer": "fake:scorer",
             "model": "m"}
    out = tmp_path / "out"
    (out / "config.yaml").parent.mkdir(parents=True)
    stats = write_outputs(out, result.samples, stats, output=cfg.output)
    assert stats["kept"] == 3 and stats["rejected_by_reason"] == {"select/not_selected": 7}
    path = write_card(out, stats, cfg)
    card = _check_metadata(path, stats, tmp_path / "hf")
    assert card.data.license == "apache-2.0"
    text = card.text
    assert "Scorer `fake:scorer`; policy `max_loss`, keep the top 3 of each group, groups " \
           "by `none`." in text
    assert "selected 3 of 10, 7 not selected" in text
    f = stats["stages"]["select"]["funnel"]["all"]
    assert _row(text, "all", 10, 3, 7, f"{f['loss_selected']['mean']}/"
                f"{f['loss_selected']['median']}", f"{f['loss_not_selected']['mean']}/"
                f"{f['loss_not_selected']['median']}")
    assert "Off (`decontam.enabled: false`)" in text
    assert "config is `config.yaml` beside this folder, sha256 `-`" in text  # none written


def test_an_empty_split_is_left_out_of_configs_so_load_dataset_works(tmp_path: Path) -> None:
    samples = [_scored(i) for i in range(5)]
    cfg = parse_config({"output": {"validation_share": 1e-9}})
    stats = write_outputs(tmp_path / "out", samples, {}, output=cfg.output)
    assert stats["kept_by_split"] == {"train": 5, "validation": 0}
    text = _check_metadata(write_card(tmp_path / "out", stats, cfg), stats, tmp_path / "hf").text
    assert "`validation` has no rows and is\nleft out of `configs`" in text
    assert "if v.num_rows}).push_to_hub" in text


def test_load_dataset_gets_each_runs_rows_not_a_cached_twin(tmp_path: Path) -> None:
    """Two runs whose datasets differ only in a measured float have the same sizes, the
    same card metadata but for the files' tag, and the same folder name `dataset`."""
    cfg = parse_config({})
    for run, seconds in (("one", 0.25), ("two", 0.5)):
        samples = [_scored(i) for i in range(3)]
        for s in samples:
            s.execution = Execution(ExecStatus.PASSED, seconds, 1, 1)
        stats = write_outputs(tmp_path / run, samples, {}, output=cfg.output)
        # load_dataset's rows are load_from_disk's, through one cache.
        _check_metadata(write_card(tmp_path / run, stats, cfg), stats, tmp_path / "hf")


def test_push_to_hub_keeps_the_card_and_points_configs_at_its_parquet(tmp_path: Path) -> None:
    """`push_to_hub` merges into the README it finds with `_get_updated_dataset_card`; run
    it on a folder holding our card (no Hub here) to pin what the card tells users."""
    from datasets import arrow_dataset
    from datasets.splits import SplitInfo
    from fsspec.implementations.dirfs import DirFileSystem
    from fsspec.implementations.local import LocalFileSystem

    merge = getattr(arrow_dataset, "_get_updated_dataset_card", None)
    if merge is None:
        pytest.skip(f"datasets {datasets.__version__} has no _get_updated_dataset_card")
    cfg = parse_config({"output": {"validation_share": 0.5}})
    stats = write_outputs(tmp_path / "out", [_scored(i) for i in range(12)], {},
                          output=cfg.output)
    ours = write_card(tmp_path / "out", stats, cfg)
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text(ours.read_text())
    dd = datasets.load_from_disk(str(tmp_path / "out" / "dataset"))
    merged, _ = merge(fs=DirFileSystem(path=str(repo), fs=LocalFileSystem()),
                      config_name="default", splits_info=[
                          SplitInfo(name=k, num_bytes=1, num_examples=v.num_rows)
                          for k, v in dd.items()],
                      features=dd["train"].features, data_dir="data", set_default=None,
                      uploaded_sizes=[1] * len(dd), deleted_sizes=[], remove_other_splits=True)
    before = DatasetCard.load(ours)
    assert merged.text == before.text
    assert merged.data.license == before.data.license and merged.data.tags == before.data.tags
    assert merged.data.configs == [{"config_name": "default", "data_files": [
        {"split": s, "path": f"data/{s}-*"} for s in dd]}]


def test_size_categories_are_the_hubs() -> None:
    hub = json.loads((RESOURCES / "size_categories.json").read_text())
    assert [c for c in hub if c != "unknown"] == list(SIZE_CATEGORIES)
    assert [size_category(n) for n in (0, 999, 1000, 9_999, 10_000, 999_999, 1_000_000,
                                       10**12 - 1, 10**12, 10**15)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M",
        "100B<n<1T", "n>1T", "n>1T"]


def test_license_must_be_a_hub_id() -> None:
    assert OutputConfig(license="cc-by-4.0").license == "cc-by-4.0"
    with pytest.raises(ValueError, match="String should match pattern"):
        OutputConfig(license="Apache 2.0")
