"""Build the configured scorer: backend + the tokenizer every backend shares."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import ScorerConfig
from pipeline.llm.models import EMBEDDED_MODELS, ModelError, model_file
from pipeline.scoring.base import LogprobBackend, ScoringError
from pipeline.scoring.scorer import Scorer


def scorer_name(cfg: ScorerConfig) -> str:
    """What identifies the scores a config makes: equal names, reusable scores."""
    extra = f":{cfg.dtype}" if cfg.backend == "transformers" else ""
    return f"{cfg.backend}:{cfg.model}{extra}:max{cfg.max_tokens}"


def _gguf(model: str) -> Path:
    if model in EMBEDDED_MODELS:
        try:
            return model_file(model)
        except ModelError as exc:
            raise ScoringError(str(exc)) from None
    path = Path(model).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise ScoringError(f"select.scorer.backend llamacpp needs a packaged model name "
                           f"({', '.join(sorted(EMBEDDED_MODELS))}) or a .gguf file, not "
                           f"{model!r}")
    return path


def build_backend(cfg: ScorerConfig) -> LogprobBackend:
    if cfg.backend == "transformers":
        from pipeline.scoring.hf import HFBackend

        return HFBackend(cfg.model, device=cfg.device, dtype=cfg.dtype,
                         max_tokens=cfg.max_tokens, batch_tokens=cfg.batch_tokens,
                         threads=cfg.threads)
    if cfg.backend == "llamacpp":
        from pipeline.scoring.llamacpp import LlamaCppBackend

        return LlamaCppBackend(_gguf(cfg.model), n_ctx=cfg.max_tokens, n_threads=cfg.threads,
                               label=cfg.model)
    from pipeline.scoring.vllm_backend import VllmBackend

    if not cfg.base_url:
        raise ScoringError("select.scorer.backend vllm needs select.scorer.base_url (the "
                           "server's /v1 URL), e.g. http://127.0.0.1:8000/v1")
    # vLLM counts the one token it generates against --max-model-len, so a prompt may be
    # at most max-model-len - 1 tokens; serve with --max-model-len >= max_tokens + 1.
    return VllmBackend(cfg.base_url, cfg.served_model or cfg.model,
                       max_tokens=cfg.max_tokens - 1, label=cfg.model)


def build_scorer(cfg: ScorerConfig) -> Scorer:
    """The scorer for `cfg`. Raises ScoringError with the fix."""
    from pipeline.scoring.hf import load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    return Scorer(build_backend(cfg), tokenizer, cfg.max_tokens)
