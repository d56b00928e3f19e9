"""Config validation: defaults, pinned error messages, the README reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from pipeline.__main__ import main
from pipeline.config import (
    ConfigError,
    PipelineConfig,
    dump_config,
    load_config,
    parse_config,
    reference_markdown,
)

ROOT = Path(__file__).resolve().parent.parent


def test_default_config_round_trips_through_yaml() -> None:
    cfg = PipelineConfig()
    assert cfg.llm.backend == "embedded"
    assert cfg.sandbox.backend == "docker"
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


def test_unknown_key_names_the_field() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"llm": {"temprature": 0.3}}, "my.yaml")
    msg = str(e.value)
    assert "invalid config my.yaml:" in msg
    assert "llm.temprature: unknown key; remove it or check the spelling" in msg


def test_bad_choice_lists_what_is_allowed() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"llm": {"backend": "ollama"}})
    msg = str(e.value)
    assert "llm.backend:" in msg
    assert "'embedded', 'openai' or 'vllm'" in msg
    assert "got 'ollama'" in msg


def test_out_of_range_value_names_the_bound() -> None:
    with pytest.raises(ConfigError, match=r"sandbox.timeout_s: Input should be greater than 0"):
        parse_config({"sandbox": {"timeout_s": 0}})


def test_cross_field_rule_says_the_fix() -> None:
    with pytest.raises(ConfigError, match=r"llm.base_url is required when llm.backend is 'openai'"):
        parse_config({"llm": {"backend": "openai"}})
    with pytest.raises(ConfigError, match=r"seeds.path is required when seeds.source"):
        parse_config({"seeds": {"source": "directory"}})


def test_load_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    top = tmp_path / "top.yaml"
    top.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(top)


def test_cli_exits_nonzero_naming_the_field(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("sandbox:\n  backend: podman\n")
    assert main(["config", "--show", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "sandbox.backend" in err and "'docker' or 'process'" in err


def test_config_show_prints_resolved_default(capsys) -> None:
    assert main(["config", "--show"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown == PipelineConfig().model_dump(mode="json")


def test_every_field_is_described() -> None:
    ref = reference_markdown()
    assert "| `llm.max_in_flight` | `256` |" in ref
    for line in ref.splitlines()[2:]:
        assert not line.endswith("|  |"), f"field without description: {line}"


def test_readme_config_reference_is_in_sync() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reference_markdown() in readme, (
        "README config reference is stale: paste `python -m pipeline config --reference`")


@pytest.mark.parametrize("name", ["vllm.yaml", "vllm_cpu.yaml", "smoke.yaml", "strategies.yaml"])
def test_shipped_configs_validate(name: str) -> None:
    load_config(ROOT / "configs" / name)


def test_seeds_git_fields_and_dedup_threshold() -> None:
    cfg = parse_config({"seeds": {"source": "git", "path": "/src/repo", "ref": "v1.2"}})
    assert (cfg.seeds.ref, cfg.seeds.dedup_threshold) == ("v1.2", 0.8)
    assert parse_config({"seeds": {"dedup_threshold": None}}).seeds.dedup_threshold is None
    with pytest.raises(ConfigError, match=r"seeds.path is required when seeds.source is 'git'"):
        parse_config({"seeds": {"source": "git"}})
    with pytest.raises(ConfigError, match=r"seeds.ref applies only to seeds.source 'git'"):
        parse_config({"seeds": {"ref": "main"}})
    with pytest.raises(ConfigError, match=r"seeds.dedup_threshold: Input should be greater"):
        parse_config({"seeds": {"dedup_threshold": 0}})
