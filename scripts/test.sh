#!/usr/bin/env bash
# README command 2: set this machine up, then run the whole test suite.
# Docker, Ray and embedded-model tests are required here (a missing prerequisite fails
# instead of skipping); only `gpu` tests skip on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PIPELINE_REQUIRE="${PIPELINE_REQUIRE:-docker,ray,model,bwrap}"
.venv/bin/ruff check pipeline tests benchmarks
exec .venv/bin/pytest "$@"
