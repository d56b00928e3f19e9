#!/usr/bin/env bash
# README command 1: set this machine up, then run the main job on the embedded CPU model.
# Extra arguments go to `python -m pipeline run` (e.g. --config my.yaml --output runs/x).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pipeline run "$@"
