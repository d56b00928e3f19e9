"""OSS-Instruct (Magicoder): a real code snippet inspires a new problem, solution and tests.

Each seed sample (`pipeline.seeds.snippets.load_seeds`) becomes `samples_per_seed`
requests; each reply becomes one generated sample whose parent is the seed, or a rejected
one whose detail shows the start of the reply. The prompt is `prompts/oss_instruct.jinja2`
(markdown reply) or `prompts/oss_instruct_json.jinja2` with `OSS_INSTRUCT_SCHEMA` as the
response format (`llm.response_format: json_schema`). A seed's `language` chooses the
templates, the reply's code fences and checks, and the response's fence (its
`LanguageSpec`, e.g. `prompts/javascript/oss_instruct.jinja2`); the child keeps it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pipeline.config import LLMConfig
from pipeline.languages import get_language
from pipeline.llm.client import ChatReply
from pipeline.llm.endpoint import LLMEndpoint
from pipeline.llm.structured import schema_response_format
from pipeline.parse import ParseFailure, parse_json_reply, parse_markdown_reply
from pipeline.prompts import render
from pipeline.record import RejectReason, Sample, content_hash
from pipeline.stages.llm_stage import LLMStage
from pipeline.stages.strategy import BuildContext, Strategy

STRATEGY = "oss_instruct"

#: JSON schema of a reply in json_schema mode. Tests are a list of statements: small
#: models write one short string per assert more reliably than one long escaped string.
OSS_INSTRUCT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "problem": {"type": "string"},
        "solution": {"type": "string"},
        "tests": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 8},
    },
    "required": ["problem", "solution", "tests"],
    "additionalProperties": False,
}

#: Prose after the solution is kept in the response only when it is this short.
MAX_EXPLANATION_CHARS = 800
#: Characters of a rejected reply kept in `reject_detail`.
REPLY_EXCERPT_CHARS = 300


@lru_cache(maxsize=8)
def example_names(template: str, language: str = "python") -> frozenset[str]:
    """Functions the template itself defines (its format example), seed left out."""
    pattern = get_language(language).example_definition
    return frozenset(pattern.findall(render(template, seed="")))


def copied_example(template: str, solution: str, language: str = "python") -> str | None:
    """The example function a solution re-implements, or None.

    Small models often answer with the prompt's format example instead of a new problem
    (measured on Qwen2.5-Coder-0.5B: 0 to 5 of 12 replies, depending on the prompt).
    """
    names = get_language(language).top_level_names(solution)
    copied = sorted(names & example_names(template, language))
    return copied[0] if copied else None


def json_response_format(backend: str) -> dict[str, Any]:
    """`response_format` asking for `OSS_INSTRUCT_SCHEMA`, in the form the server takes.

    See `pipeline.llm.structured` for which server takes which form.
    """
    return schema_response_format(backend, "oss_instruct", OSS_INSTRUCT_SCHEMA)


class OssInstructGenerator(LLMStage):
    """Turn seed snippets into (problem, solution, tests) samples with the model.

    `samples_per_seed` > 1 sends that many requests per seed, which differ only in their
    `seed` request parameter (replica 0 keeps LLMStage's seed, replica k a seed derived
    from it and k), so the request cache keeps them apart and the server samples each
    anew; identical replies give identical sample ids, left to deduplication.
    """

    name = STRATEGY
    inputs = ("seed", "language")
    outputs = ("instruction", "response", "code", "tests")

    def __init__(self, endpoint: LLMEndpoint, cfg: LLMConfig, cache_path: str | None,
                 *, samples_per_seed: int, seed: int) -> None:
        super().__init__(endpoint, cfg, cache_path, seed=seed)
        if samples_per_seed < 1:
            raise ValueError("samples_per_seed must be at least 1")
        self.samples_per_seed = samples_per_seed
        self.json_mode = cfg.response_format == "json_schema"

    def template(self, language: str = "python") -> str:
        """The prompt template for seeds in `language` and the configured reply format."""
        return get_language(language).oss_instruct_templates[self.cfg.response_format]

    def accepts(self, sample: Sample) -> bool:
        """Seed samples: OSS-Instruct sources with a snippet and no problem yet."""
        return sample.strategy == STRATEGY and not sample.instruction \
            and bool(sample.seed.strip())

    def candidates(self, sample: Sample) -> int:
        """`samples_per_seed` requests for each seed sample."""
        return self.samples_per_seed

    def build_messages(self, sample: Sample) -> list[dict[str, str]]:
        """One user message: the template rendered with the seed."""
        return [{"role": "user",
                 "content": render(self.template(sample.language), seed=sample.seed)}]

    def request_params(self, sample: Sample) -> dict[str, Any]:
        """The JSON schema in json_schema mode."""
        if self.json_mode:
            return {"response_format": json_response_format(self.cfg.backend)}
        return {}

    def parse_reply(self, sample: Sample, reply: ChatReply) -> list[Sample]:
        """One generated sample (child of the seed), or a rejected one; never raises."""
        text = reply.text or ""
        language = sample.language
        child = Sample(strategy=STRATEGY, parent_id=sample.id, seed_ref=sample.seed_ref,
                       seed=sample.seed, model=sample.model, tokens=dict(sample.tokens),
                       language=language)
        parse = parse_json_reply if self.json_mode else parse_markdown_reply
        result = parse(text, language)
        self.counters["generated"] += 1
        if isinstance(result, ParseFailure):
            # No content to hash: the reply itself tells rejected siblings apart.
            child.id = content_hash(STRATEGY, sample.id, "rejected", text)
            return [child.reject(self.name, result.reason,
                                 f"{result.detail}; reply: {text[:REPLY_EXCERPT_CHARS]}")]
        self.counters["parsed"] += 1
        copied = copied_example(self.template(language), result.solution, language)
        if copied is not None:
            child.id = content_hash(STRATEGY, sample.id, "rejected", text)
            return [child.reject(self.name, RejectReason.DUPLICATE,
                                 f"the reply copies the prompt's example `{copied}`; "
                                 f"reply: {text[:REPLY_EXCERPT_CHARS]}")]
        child.instruction = result.problem
        child.code = result.solution
        child.tests = result.tests
        child.response = build_response(result.solution, result.explanation, language)
        child.assign_id()
        self.counters["novel"] += 1
        return [child]


def build_response(solution: str, explanation: str = "", language: str = "python") -> str:
    """The assistant turn of the dataset: the solution in a fence of its language (```python
    by default), maybe explained."""
    response = f"```{get_language(language).response_tag}\n{solution.strip()}\n```"
    if explanation and len(explanation) <= MAX_EXPLANATION_CHARS:
        response += f"\n\n{explanation.strip()}"
    return response


def _sources(ctx: BuildContext) -> list[Sample]:
    from pipeline.seeds.snippets import load_seeds_with_stats

    seeds, stats = load_seeds_with_stats(ctx.cfg.seeds, ctx.cfg.generation.language)
    ctx.stats["seed_snippets"] = stats
    return seeds


def _stages(ctx: BuildContext) -> list[LLMStage]:
    return [OssInstructGenerator(ctx.endpoint, ctx.cfg.llm, ctx.cache_path,
                                 samples_per_seed=ctx.cfg.generation.samples_per_seed,
                                 seed=ctx.cfg.seed)]


RECORD = Strategy(name=STRATEGY, sources=_sources, generate=_stages, counted_by=STRATEGY,
                  languages=frozenset({"python", "javascript"}))
