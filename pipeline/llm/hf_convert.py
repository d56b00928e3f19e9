"""Convert a GGUF model into a Hugging Face safetensors directory (for vLLM, which cannot
serve a GGUF on CPU).

Run as a script by an interpreter that has `transformers`, `torch` and `gguf` (vLLM's own
virtualenv): it imports nothing from the pipeline, so the project's and vLLM's environments
never have to share packages.

    python pipeline/llm/hf_convert.py MODEL.gguf OUT_DIR

transformers dequantises the GGUF (`gguf_file=`); the weights are copied into a plain
model built from the same config (one loaded from a GGUF refuses `save_pretrained`) and
saved in float32, so a model served from the directory computes what a transformers float32
forward of the same GGUF computes. The tokenizer, with the chat template stored in the
GGUF, is saved beside them. OUT_DIR is written under a temporary name and renamed when
complete, so a killed conversion never leaves a directory that looks finished.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path


def _chat_template(gguf_path: Path) -> str | None:
    from gguf import GGUFReader  # type: ignore[import-not-found]

    field = GGUFReader(str(gguf_path)).fields.get("tokenizer.chat_template")
    if field is None:
        return None
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def convert(gguf_path: Path, out_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        if not getattr(tok, "chat_template", None):
            tok.chat_template = _chat_template(gguf_path)
        if not tok.chat_template:
            raise SystemExit(f"{gguf_path} has no chat template; vLLM's chat API needs one")
        loaded = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
        # A model loaded from a GGUF is marked quantized and refuses save_pretrained: build
        # a plain one from the same config and copy the dequantised weights into it.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        if unexpected or [k for k in missing if "lm_head" not in k]:
            raise SystemExit(f"weights do not fit the config: missing {missing}, "
                             f"unexpected {unexpected}")
        model.tie_weights()
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700; the cache is as readable as ~/.cache
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    gguf_path, out_dir = Path(argv[0]).resolve(), Path(argv[1]).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    convert(gguf_path, out_dir)
    print(out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
