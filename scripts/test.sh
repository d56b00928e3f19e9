#!/usr/bin/env bash
# README command 2: set this machine up, then run the whole test suite.
# Docker, Ray and embedded-model tests are required here (a missing prerequisite fails
# instead of skipping). The `vllm` group (a real vLLM server, CPU build without a GPU) runs
# and is required where vLLM is set up (bash scripts/setup_vllm.sh; CI does it), and is
# reported as skipped where it is not; `gpu` tests skip on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PIPELINE_REQUIRE="${PIPELINE_REQUIRE:-docker,ray,model,bwrap,browser}"
venv="${PIPELINE_VLLM_VENV:-.venv-vllm}"
if [ -f "$venv/.pipeline-vllm-ready" ]; then
  case ",$PIPELINE_REQUIRE," in *,vllm,*) ;; *) PIPELINE_REQUIRE="$PIPELINE_REQUIRE,vllm" ;; esac
  echo "[test] vllm test group: runs (vLLM $(cat "$venv/.pipeline-vllm-ready") in $venv)"
else
  echo "[test] vllm test group: SKIPPED, vLLM is not set up here (bash scripts/setup_vllm.sh)"
fi
.venv/bin/ruff check pipeline tests benchmarks
exec .venv/bin/pytest "$@"
