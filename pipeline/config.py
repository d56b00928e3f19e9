"""Run configuration: one YAML file, validated once at start-up.

Every default lives here and nowhere else. Unknown keys are errors, and errors name the
field and what is allowed (see `load_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from pipeline.config_base import _Section
from pipeline.decontam.config import DecontamConfig, DedupConfig
from pipeline.languages import get_language


class SeedsConfig(_Section):
    """Where OSS-Instruct seed snippets come from."""

    source: Literal["stdlib", "directory", "git", "hf_dataset"] = Field(
        "stdlib",
        description="stdlib: the running interpreter's standard library; directory: source "
        "files under `path`; git: the files tracked at `ref` in a git repository; "
        "hf_dataset: a Hugging Face dataset column of source files.",
    )
    path: str | None = Field(
        None, description="Directory of source files (source=directory); a local git "
        "checkout, bare repository or URL git can clone (git; a URL is fetched shallow once "
        "into $PIPELINE_CACHE_DIR/repos or ~/.cache/pipeline/repos); or a dataset name or "
        "path for `datasets.load_dataset` (hf_dataset).")
    ref: str = Field("HEAD", description="Branch, tag or commit to read (source=git); for a "
                     "URL, a branch, a tag or a full 40-character commit hash.")
    column: str = Field("content", description="Column holding source text (source=hf_dataset).")
    split: str = Field("train", description="Dataset split to read (source=hf_dataset).")
    max_seeds: int = Field(24, ge=1, description="Number of snippets to use for this run.")
    min_lines: int = Field(4, ge=1, description="Shortest snippet kept, in lines.")
    max_lines: int = Field(40, ge=1, description="Longest snippet kept, in lines.")
    dedup_threshold: float | None = Field(
        0.8, gt=0, le=1, description="Drop a snippet whose MinHash Jaccard similarity to an "
        "already chosen one (token 5-grams, locals renamed alike, comments ignored) is at "
        "least this; null keeps near-duplicates (exact copies are always dropped).")
    shuffle_seed: int | None = Field(
        None, description="Seed for choosing snippets: same seed, same snippets; default: "
        "the run's global `seed`.")

    @property
    def order_seed(self) -> int:
        """`shuffle_seed`; unset (a SeedsConfig on its own, outside a run config, which
        fills it in from `seed`): the global seed's default."""
        if self.shuffle_seed is not None:
            return self.shuffle_seed
        return int(PipelineConfig.model_fields["seed"].default)

    @model_validator(mode="after")
    def _check(self) -> SeedsConfig:
        if self.source != "stdlib" and not self.path:
            raise ValueError(f"seeds.path is required when seeds.source is {self.source!r}")
        if self.min_lines > self.max_lines:
            raise ValueError("seeds.min_lines must not exceed seeds.max_lines")
        if self.source != "git" and self.ref != "HEAD":
            raise ValueError(f"seeds.ref applies only to seeds.source 'git' (source is "
                             f"{self.source!r}); remove seeds.ref or set seeds.source: git")
        if not self.ref.strip():
            raise ValueError("seeds.ref must not be empty; use HEAD, a branch, tag or commit")
        return self


class EmbeddedConfig(_Section):
    """The llama.cpp server that the pipeline starts itself on 127.0.0.1."""

    model: Literal["qwen2.5-coder-0.5b", "smollm2-135m"] = Field(
        "qwen2.5-coder-0.5b",
        description="Model shipped through PyPI packages (see README, 'The embedded model').")
    model_path: str | None = Field(None, description="A GGUF file to serve instead of `model`.")
    n_ctx: int = Field(4096, ge=512, description="Context window in tokens.")
    n_threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores.")
    startup_timeout_s: float = Field(120.0, gt=0, description="Seconds to wait for the server.")
    max_in_flight: int = Field(
        2, ge=1, description="Cap on llm.max_in_flight for this backend: llama.cpp's server "
        "answers one request at a time, so more in flight only queue there and time out; "
        "two keep it busy without waste.")


class VllmConfig(_Section):
    """A vLLM server launched by the pipeline (backend=vllm): on the GPU when there is one,
    on CPU otherwise (`bash scripts/setup_vllm.sh` installs it in its own virtualenv)."""

    model: str = Field(
        "qwen2.5-coder-0.5b", description="What `vllm` serves: a packaged model name "
        "(qwen2.5-coder-0.5b, smollm2-135m; its GGUF is converted once into a cached Hugging "
        "Face directory), a local Hugging Face model directory, or a Hugging Face id such "
        "as Qwen/Qwen2.5-Coder-7B-Instruct (needs a reachable hub).")
    python: str | None = Field(None, description="Interpreter of vLLM's virtualenv; default: "
                               ".venv-vllm/bin/python (or $PIPELINE_VLLM_VENV), else this one.")
    device: Literal["auto", "cpu", "gpu"] = Field(
        "auto", description="auto: the GPU when nvidia-smi lists one, else CPU.")
    port: int | None = Field(None, ge=1, le=65535, description="Port on 127.0.0.1; default: a "
                             "free one.")
    dtype: str = Field("auto", description="--dtype; auto on CPU: bfloat16 where the CPU has "
                       "bf16 instructions, else float32.")
    max_model_len: int | None = Field(None, ge=256, description="--max-model-len; default: "
                                      "2048 on CPU, the model's own on a GPU.")
    cpu_kv_cache_gib: float = Field(2.0, gt=0, description="KV cache on CPU "
                                    "(VLLM_CPU_KVCACHE_SPACE), GiB.")
    enforce_eager: bool | None = Field(None, description="--enforce-eager; default: on for "
                                       "CPU (torch.compile adds minutes to start-up), off "
                                       "on a GPU.")
    extra_args: list[str] = Field(default_factory=list,
                                  description="Extra arguments for vLLM's OpenAI server.")
    startup_timeout_s: float = Field(1800.0, gt=0, description="Seconds to wait for the server.")


class LLMConfig(_Section):
    """How the pipeline reaches the model: always the OpenAI-compatible HTTP API."""

    backend: Literal["embedded", "openai", "vllm"] = Field(
        "embedded",
        description="embedded: llama.cpp server started by the pipeline (CPU default); "
        "openai: any OpenAI-compatible base_url (e.g. a vLLM server); vllm: the pipeline "
        "launches a vLLM server itself (GPU or CPU; see llm.vllm).")
    base_url: str | None = Field(None, description="API base URL, e.g. http://gpu1:8000/v1 "
                                 "(backend=openai).")
    model: str | None = Field(None, description="Model name sent in requests; default: the "
                              "served model's name.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Environment variable holding the "
                             "API key (a placeholder is sent when it is unset).")
    embedded: EmbeddedConfig = Field(default_factory=EmbeddedConfig,
                                     description="Settings for backend=embedded.")
    vllm: VllmConfig = Field(default_factory=VllmConfig, description="Settings for backend=vllm.")
    max_in_flight: int = Field(256, ge=1, description="Requests in flight per client process.")
    timeout_s: float = Field(300.0, gt=0, description="Seconds before one request times out.")
    max_retries: int = Field(5, ge=0, description="Retries on 429, 408, 5xx and connection "
                             "errors; other errors are not retried.")
    backoff_base_s: float = Field(0.5, gt=0, description="First retry delay; doubles each try.")
    backoff_max_s: float = Field(30.0, gt=0, description="Cap on one retry delay.")
    abort_after_failures: int = Field(
        16, ge=1, description="Stop the run after this many consecutive requests failed to "
        "reach the server (rerun with the same --output to resume).")
    temperature: float = Field(0.7, ge=0, le=2, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    max_tokens: int = Field(1024, ge=16, description="Completion token limit per request.")
    response_format: Literal["markdown", "json_schema"] = Field(
        "markdown",
        description="markdown: ask for fenced sections and extract code blocks; json_schema: "
        "each strategy's reply follows a JSON schema, enforced by the server's guided "
        "decoding: backend vllm and openai-on-vLLM (`json_schema` response_format), the "
        "OpenAI API, and embedded (llama.cpp turns the schema into a grammar). Used by "
        "OSS-Instruct, Self-Instruct, Evol-Instruct and solve; Case2Code answers stay one "
        "code block. A server that ignores it still gets a JSON prompt and the parsers fall "
        "back to plain text.")
    cache: bool = Field(True, description="Keep an on-disk request cache so reruns and "
                        "resumes do not pay twice.")
    cache_path: str | None = Field(None, description="sqlite cache file; default: "
                                   "<output>/llm_cache.sqlite.")

    @model_validator(mode="after")
    def _check(self) -> LLMConfig:
        if self.backend == "openai" and not self.base_url:
            raise ValueError("llm.base_url is required when llm.backend is 'openai' "
                             "(e.g. http://localhost:8000/v1)")
        return self


class SelfInstructConfig(_Section):
    """Self-Instruct (Wang et al. 2022; Code Alpaca): new tasks from in-context examples,
    kept only if novel (ROUGE-L) against the pool of seeds and accepted tasks."""

    num_seeds: int | None = Field(None, ge=1, description="Seed tasks that each send one "
                                  "request per round; default: all of `seed_tasks`.")
    target: int = Field(40, ge=1, description="New instructions to accept; rounds stop once "
                        "this many are in the pool (counted per LLM actor).")
    rounds: int = Field(3, ge=1, description="Most rounds of generation.")
    examples_per_request: int = Field(4, ge=1, description="In-context example tasks per "
                                      "request.")
    generated_examples: int = Field(1, ge=0, description="Of those, how many come from earlier "
                                    "accepted generations when there are any (rest: seeds).")
    prompt_style: Literal["dialogue", "list"] = Field(
        "dialogue", description="dialogue: the in-context examples are earlier turns of a "
        "chat (each a request for a topic and the task), and the model writes one new task "
        "per request; list: one prompt shows the examples as a numbered list and asks for "
        "`tasks_per_request` more (the paper's form; small models mostly echo the examples).")
    tasks_per_request: int = Field(5, ge=1, description="New tasks asked for per request "
                                   "(prompt_style list; dialogue asks for one).")
    topics: bool = Field(True, description="Name one topic per request (chosen by a seeded "
                         "RNG from `topics_file`) and ask for short tasks about it: small "
                         "models otherwise copy their in-context examples.")
    topics_file: str | None = Field(None, description="Text file of topics, one per line "
                                    "('#' comments); default: the bundled "
                                    "data/self_instruct_topics.txt.")
    stop_at_code: bool = Field(True, description="Send stop sequences (a python fence, a "
                               "`def` line) so that a model which starts solving its tasks "
                               "stops there instead of spending tokens on code.")
    novelty_threshold: float = Field(0.7, gt=0, le=1, description="Keep a new instruction "
                                     "only if its ROUGE-L against every pool item is below "
                                     "this.")
    min_words: int = Field(8, ge=1, description="Shortest instruction kept, in words.")
    max_words: int = Field(150, ge=1, description="Longest instruction kept, in words.")
    blocked_keywords: list[str] = Field(
        default_factory=lambda: ["image", "images", "picture", "file", "files", "network",
                                 "internet", "website", "url", "gui", "video", "audio",
                                 "music", "draw", "plot", "database", "input()"],
        description="Instructions containing one of these words (any case) are dropped: "
        "tasks a text-only model or the sandbox cannot do.")

    @model_validator(mode="after")
    def _check(self) -> SelfInstructConfig:
        if self.min_words > self.max_words:
            raise ValueError("generation.self_instruct.min_words must not exceed max_words")
        if self.generated_examples > self.examples_per_request:
            raise ValueError("generation.self_instruct.generated_examples must not exceed "
                             "examples_per_request")
        return self


class EvolConfig(_Section):
    """Evol-Instruct (WizardCoder): evolve seed tasks in depth and breadth for several rounds,
    dropping failed evolutions."""

    num_seeds: int | None = Field(None, ge=1, description="Seed tasks to evolve; default: all "
                                  "of `seed_tasks`.")
    rounds: int = Field(2, ge=1, description="Evolution rounds; each round evolves the "
                        "previous round's survivors.")
    operators: list[Literal["add_constraints", "rarer_requirement", "more_reasoning",
                            "erroneous_code", "complexity", "breadth"]] = Field(
        default_factory=lambda: ["add_constraints", "rarer_requirement", "more_reasoning",
                                 "erroneous_code", "complexity", "breadth"],
        min_length=1,
        description="Operators to choose from (deterministically per sample and round): five "
        "in depth, `breadth` writes a new task in the same domain.")
    max_copy_similarity: float = Field(0.95, gt=0, le=1, description="An evolution with "
                                       "ROUGE-L this close to its parent copied the prompt.")
    breadth_max_similarity: float = Field(0.7, gt=0, le=1, description="A breadth evolution "
                                          "must score below this against its parent.")


class Case2CodeConfig(_Section):
    """Case2Code: infer a verified function from input/output pairs computed in the sandbox."""

    num_seeds: int | None = Field(None, ge=0, description="Seed tasks used as verified "
                                  "functions besides the run's passed samples; default: all.")
    min_shown: int = Field(2, ge=1, description="Fewest input/output pairs shown to the "
                           "model.")
    held_out: int = Field(2, ge=1, description="Most pairs held out to check the answer (at "
                          "least one, always).")
    max_value_chars: int = Field(200, ge=8, description="Pairs whose input or output is longer "
                                 "than this (as Python source) are not used.")


class GenerationConfig(_Section):
    """Which strategies make samples, and how many."""

    strategies: list[Literal["oss_instruct", "self_instruct", "evol_instruct",
                             "case2code"]] = Field(
        default_factory=lambda: ["oss_instruct"], description="Generation strategies to run.")
    language: Literal["python", "javascript"] = Field(
        "python", description="Language of the generated code, its tests and the seed "
        "snippets (see README, 'Languages'). javascript: OSS-Instruct only, seeds from .js "
        "files (seeds.source directory, git or hf_dataset), run with Node.js in the sandbox.")
    samples_per_seed: int = Field(1, ge=1, description="Problems asked for per seed snippet.")
    seed_tasks: str | None = Field(None, description="JSONL of seed tasks (id, instruction, "
                                   "solution, tests) for self_instruct, evol_instruct and "
                                   "case2code; default: the bundled data/seed_tasks.jsonl.")
    solutions_per_instruction: int = Field(
        1, ge=1, description="Candidate solution+tests replies per generated instruction; the "
        "sandbox keeps those that pass and each sample's scores record the pass count.")
    dedup_threshold: float | None = Field(
        0.7, gt=0, le=1, description="Drop a kept sample whose instruction has ROUGE-L >= this "
        "against an earlier kept one (all strategies, across actors; candidates of one "
        "instruction and transformation variants are exempt); null keeps near-duplicates.")
    self_instruct: SelfInstructConfig = Field(default_factory=SelfInstructConfig,
                                              description="Self-Instruct settings.")
    evol: EvolConfig = Field(default_factory=EvolConfig, description="Evol-Instruct settings.")
    case2code: Case2CodeConfig = Field(default_factory=Case2CodeConfig,
                                       description="Case2Code settings.")

    @model_validator(mode="after")
    def _check(self) -> GenerationConfig:
        from pipeline.stages.strategies import STRATEGIES  # the records import this module

        supported = {n for n, st in STRATEGIES.items() if self.language in st.languages}
        unsupported = [s for s in self.strategies if s not in supported]
        if unsupported:
            raise ValueError(
                f"generation.strategies {unsupported} do not support generation.language "
                f"{self.language!r} (it supports {sorted(supported)}); remove them or set "
                "generation.language: python")
        return self


class SandboxConfig(_Section):
    """Where and how generated code runs against its tests."""

    backend: Literal["docker", "process"] = Field(
        "docker", description="docker: containers (no network, read-only root, limits); "
        "process: bubblewrap sandboxes (namespaces, rlimits; no memory cgroup) for machines "
        "without Docker; needs `bwrap`.")
    image: str = Field("pipeline-sandbox:2", description="Sandbox image (build it with "
                       "`docker build -t pipeline-sandbox:2 sandbox/` or "
                       "`sandbox/build-offline.sh`).")
    docker_host: str | None = Field(None, description="Docker daemon URL; default: DOCKER_HOST "
                                    "or unix:///var/run/docker.sock.")
    timeout_s: float = Field(10.0, gt=0, description="Wall-clock limit per sample.")
    memory_mb: int = Field(512, ge=32, description="Memory limit per sample.")
    cpus: float = Field(1.0, gt=0, description="CPU limit per container.")
    pids_limit: int = Field(64, ge=8, description="Process limit per container.")
    tmpfs_mb: int = Field(64, ge=1, description="Size of the writable /tmp.")
    output_limit_bytes: int = Field(65536, ge=1024, description="stdout/stderr kept per sample.")
    workers: int = Field(2, ge=1, description="Samples run at the same time per sandbox stage.")
    cache: bool = Field(True, description="Keep every verdict on disk, keyed by the code, the "
                        "tests, the limits, the image and the runner, so a rerun, a resume or "
                        "an --extend runs no sample twice (sandbox errors are not kept).")
    cache_path: str | None = Field(None, description="sqlite file of verdicts; default: "
                                   "<output>/sandbox_cache.sqlite in a run (the sandbox "
                                   "command keeps none unless this is set).")


class RayConfig(_Section):
    """The executor. Stages run on Ray Data; `local` runs them in one process."""

    executor: Literal["ray", "local"] = Field("ray", description="ray: Ray Data; local: one "
                                              "process, no Ray (tests, debugging).")
    address: str | None = Field(None, description="Ray cluster to join (e.g. ray://head:10001 "
                                "or auto); default: $RAY_ADDRESS (set by `ray job submit`), "
                                "else a local instance of this run's own.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs for a local Ray instance.")
    llm_actors: int = Field(1, ge=1, description="Ray actors that send LLM requests.")
    sandbox_actors: int = Field(1, ge=1, description="Ray actors that run sandboxes.")
    llm_waves_per_batch: int = Field(
        4, ge=1, description="Samples per LLM-stage batch, in multiples of llm.max_in_flight: "
        "a batch is sent at once and ends with its slowest request, and several waves keep "
        "the server busy meanwhile. Both executors use it.")
    sandbox_batch_size: int = Field(64, ge=1, description="Samples per batch of a sandbox "
                                    "stage (execution gate, Case2Code, variant gate).")
    cpu_batch_size: int = Field(32, ge=1, description="Samples per batch of a CPU stage "
                                "(transformations).")
    stall_timeout_s: float = Field(
        1800.0, ge=0, description="A run in which no request is answered and no batch finishes "
        "for this long is stalled: it stops with the command that resumes it. A slow model "
        "is not a stall (every answered request counts); 0 turns the check off.")


class TransformConfig(_Section):
    """Code transformations of passed samples: refactorings, text augmentations and bugs,
    each variant re-verified in the sandbox (see pipeline/transform)."""

    enabled: bool = Field(False, description="Add the transform and variant-gate stages "
                          "after the execution gate.")
    operators: list[str] | None = Field(
        None, description="Operators to use, by name (`python -m pipeline transform "
        "--list` shows them); default: all.")
    variants_per_sample: int = Field(4, ge=0, description="Variants tried for per passed "
                                     "sample, split over kinds by `mix`.")
    mix: dict[Literal["refactor", "augment", "bug"], float] = Field(
        default_factory=lambda: {"refactor": 0.5, "augment": 0.2, "bug": 0.3},
        description="Relative share of refactor (behaviour-preserving), augment "
        "(syntax-breaking text edits, for repair pairs) and bug variants.")
    detect_samples: bool = Field(True, description="For every kept bug, also write a "
                                 "bug-detection sample next to the find-and-fix one.")

    @model_validator(mode="after")
    def _check(self) -> TransformConfig:
        if any(v < 0 for v in self.mix.values()) or not sum(self.mix.values()) > 0:
            raise ValueError("transform.mix needs non-negative shares with a positive sum, "
                             "e.g. {refactor: 0.5, augment: 0.2, bug: 0.3}")
        return self


class ScorerConfig(_Section):
    """The model that scores samples (loss, loss alone, IFD; see pipeline/scoring)."""

    backend: Literal["transformers", "llamacpp", "vllm"] = Field(
        "transformers", description="transformers: torch in this process (CPU or GPU; the "
        "fastest runtime here); llamacpp: the GGUF in-process with llama.cpp; vllm: a vLLM "
        "server's prompt log-probabilities (select.scorer.base_url, else the run's own vLLM "
        "server when llm.backend is vllm and serves the same model).")
    model: str = Field("smollm2-135m", description="A packaged model name (smollm2-135m, "
                       "qwen2.5-coder-0.5b), a local Hugging Face directory (e.g. the "
                       "checkpoint being fine-tuned), or a Hugging Face id; llamacpp takes a "
                       "packaged name or a .gguf path.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="transformers: "
                                                   "auto is cuda when torch sees a GPU.")
    dtype: str = Field("float32", description="transformers: torch dtype of the weights.")
    max_tokens: int = Field(2048, ge=16, description="Longest conversation scored; longer "
                            "responses keep their first tokens that fit (recorded as "
                            "score_truncated_tokens).")
    batch_tokens: int = Field(4096, ge=256, description="transformers: padded tokens per "
                              "forward batch (bounds the logits' memory).")
    threads: int | None = Field(None, ge=1, description="CPU threads; default: all cores.")
    batch_size: int = Field(64, ge=1, description="Samples per scoring-stage batch.")
    cache: bool = Field(True, description="Keep every score on disk, keyed by the scorer and "
                        "the text, so a rerun, a resume or an --extend scores nothing twice.")
    cache_path: str | None = Field(None, description="sqlite file of scores; default: "
                                   "<output>/score_cache.sqlite in a run.")
    base_url: str | None = Field(None, description="vllm: the server's /v1 URL.")
    served_model: str | None = Field(None, description="vllm: the model name the server "
                                     "serves; default: select.scorer.model.")


class SelectConfig(_Section):
    """Loss-based selection: score every live sample, then keep the most valuable per group."""

    enabled: bool = Field(True, description="Add the scoring stage and the selection step "
                          "(after the transforms, before the dataset is written).")
    scorer: ScorerConfig = Field(default_factory=ScorerConfig, description="Scoring model.")
    policy: Literal["ifd", "max_loss", "min_loss", "random", "band"] = Field(
        "ifd", description="ifd: drop IFD >= 1 (the instruction does not help predict the "
        "response), then keep the highest IFD first (Superfiltering); max_loss: highest "
        "loss first (GenCode); min_loss: lowest loss first; random: a seeded shuffle (the "
        "control); band: loss percentiles within select.band.")
    keep: float | int = Field(1.0, description="Per group: a float is a fraction in (0, 1] "
                              "of the group (1.0: all that the policy does not rule out), an "
                              "integer a count (1 with group_by: parent keeps the best of "
                              "each original and its variants, GenCode's form).")
    band: tuple[float, float] = Field((10.0, 90.0), description="policy band: keep samples "
                                      "whose loss percentile in their group is in [lo, hi].")
    group_by: Literal["strategy", "kind", "parent", "none"] = Field(
        "strategy", description="Ranks and cuts are taken within groups, so a cut cannot "
        "wipe out a strategy or a kind: strategy, kind (original/refactor/augment/bug), "
        "parent (an original with its refactorings; repair and bug samples are families of "
        "their own), none.")

    @model_validator(mode="after")
    def _check(self) -> SelectConfig:
        if isinstance(self.keep, int) and not isinstance(self.keep, bool):
            if self.keep < 1:
                raise ValueError(f"select.keep as a count must be >= 1, not {self.keep}")
        elif not 0 < self.keep <= 1:
            raise ValueError(f"select.keep as a fraction must be in (0, 1], not {self.keep} "
                             "(write a count as an integer, e.g. 100)")
        lo, hi = self.band
        if not 0 <= lo < hi <= 100:
            raise ValueError("select.band needs 0 <= lo < hi <= 100, e.g. [10, 90]")
        return self


class OutputConfig(_Section):
    """What is written under --output besides the rows: the split and the dataset card."""

    validation_share: float = Field(
        0.05, ge=0, lt=1, description="Share of kept rows put in a `validation` split, "
        "chosen by a hash of the row's id alone: the same id is always in the same split, in "
        "every run and every --extend, and raising the share only moves rows from train to "
        "validation. 0: no validation split (the dataset has `train` only).")
    license: str = Field(
        "unknown", pattern=r"^[a-z0-9][a-z0-9.+-]*$",
        description="Hub license id written to the dataset card "
        "(DIR/dataset/README.md), e.g. apache-2.0, cc-by-4.0, other: the terms depend on the "
        "model that wrote the samples and on the seeds, which the pipeline cannot know.")


class PipelineConfig(_Section):
    """A whole run."""

    seed: int = Field(0, description="Global seed: sampling, shuffles and request seeds "
                      "derive from it, so a rerun is reproducible.")
    seeds: SeedsConfig = Field(default_factory=SeedsConfig, description="Seed snippets.")
    llm: LLMConfig = Field(default_factory=LLMConfig, description="Model access.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig,
                                         description="Strategies.")
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig, description="Execution gate.")
    ray: RayConfig = Field(default_factory=RayConfig, description="Executor.")
    transform: TransformConfig = Field(default_factory=TransformConfig,
                                       description="Code transformations and bug variants.")
    select: SelectConfig = Field(default_factory=SelectConfig,
                                 description="Loss-based scoring and selection.")
    decontam: DecontamConfig = Field(default_factory=DecontamConfig,
                                     description="Benchmark decontamination.")
    dedup: DedupConfig = Field(default_factory=DedupConfig,
                               description="Exact and MinHash near-duplicate removal.")
    output: OutputConfig = Field(default_factory=OutputConfig,
                                 description="The validation split and the dataset card.")

    @model_validator(mode="after")
    def _check(self) -> PipelineConfig:
        if self.seeds.shuffle_seed is None:
            self.seeds.shuffle_seed = self.seed
        language = self.generation.language
        if language == "python":
            return self
        if self.transform.enabled:
            raise ValueError(f"transform.enabled works on Python code only, and "
                             f"generation.language is {language!r}; set transform.enabled: "
                             "false or generation.language: python")
        if self.seeds.source == "stdlib" and "oss_instruct" in self.generation.strategies:
            raise ValueError(f"seeds.source 'stdlib' is Python's standard library, and "
                             f"generation.language is {language!r}; set seeds.source: "
                             f"directory and seeds.path to a folder of "
                             f"{'/'.join(get_language(language).suffixes)} files")
        return self


def resolved(cfg: PipelineConfig) -> PipelineConfig:
    """The config as a run uses it (and writes to OUTPUT/config.yaml): defaults that depend
    on the backend filled in: `llm.max_in_flight` capped by `llm.embedded.max_in_flight`
    on the embedded backend. (`seeds.shuffle_seed` is filled in from `seed` at
    validation.)"""
    llm = cfg.llm
    if llm.backend == "embedded" and llm.max_in_flight > llm.embedded.max_in_flight:
        llm = llm.model_copy(update={"max_in_flight": llm.embedded.max_in_flight})
    return cfg.model_copy(update={"llm": llm})


class ConfigError(ValueError):
    """A config that cannot run. The message names each bad field and what is allowed."""


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            lines.append(f"  {loc}: unknown key; remove it or check the spelling "
                         "(`python -m pipeline config --show` lists every key)")
        elif e["type"] == "literal_error":
            lines.append(f"  {loc}: {e['msg']} (got {e['input']!r})")
        else:
            lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def parse_config(data: dict | None, source: str = "<dict>") -> PipelineConfig:
    """Validate a config mapping; raise ConfigError with one line per bad field."""
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"invalid config {source}: expected a mapping at the top level")
    try:
        return PipelineConfig.model_validate(data or {})
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def load_config(path: str | Path | None) -> PipelineConfig:
    """Load and validate a YAML config; None gives the built-in default."""
    if path is None:
        return PipelineConfig()
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid config {p}: not valid YAML: {exc}") from None
    return parse_config(data, str(p))


def dump_config(cfg: PipelineConfig) -> str:
    """The resolved config as YAML, the form `config --show` prints."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)


def reference_markdown(model: type[BaseModel] = PipelineConfig, prefix: str = "") -> str:
    """A markdown table of every field: key, default and description (for the README)."""
    rows: list[str] = []
    if not prefix:
        rows += ["| key | default | description |", "| --- | --- | --- |"]
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows.append(reference_markdown(ann, key + "."))
            continue
        default = f.default_factory() if f.default_factory else f.default
        rows.append(f"| `{key}` | `{default!r}` | {f.description or ''} |")
    return "\n".join(rows)
