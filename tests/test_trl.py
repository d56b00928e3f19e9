"""The consumer loads the dataset as is: a real run's `OUT/dataset` trains TRL's SFTTrainer.

A small pipeline run (fake OpenAI server, real Docker sandbox, local executor) writes the
dataset; `datasets.load_from_disk(OUT/dataset)["train"]` goes to `SFTTrainer` untouched: no
column renamed, dropped or reformatted. The model is the packaged SmolLM2-135M-Instruct
GGUF, loaded (weights, and the tokenizer with its chat template) by transformers with
`gguf_file=`, so nothing is downloaded. A few CPU steps must move the weights with a finite
loss, and the tokenised examples must be the chat template applied to `messages`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import datasets
import pytest

from pipeline.llm.models import model_file
from pipeline.run import run_pipeline
from tests.fake_openai_server import FakeOpenAIServer
from tests.test_run_e2e import _config, model, write_seeds

pytestmark = [pytest.mark.docker, pytest.mark.model, pytest.mark.slow]

torch = pytest.importorskip("torch")

MAX_STEPS = 3
MAX_LENGTH = 128


def _trainable_model(gguf: Path) -> Any:
    """The GGUF's weights, dequantised by transformers, in a plain model Trainer will train.

    A model loaded with `gguf_file=` is marked quantized (its `GgufHfQuantizer` is not
    trainable), and `Trainer` refuses to fine-tune it without adapters; the weights are
    copied into a model built from the same config, as pipeline/llm/hf_convert.py does.
    """
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    assert not unexpected and not [k for k in missing if "lm_head" not in k], (missing,
                                                                                unexpected)
    plain.tie_weights()
    return plain


# transformers >= 5 renames it activation_checkpointing; the old name works on 4.x and 5.x.
@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_sft_trainer_trains_on_the_dataset_as_is(tmp_path: Path) -> None:
    import trl  # in the `test` extra: a missing TRL fails the test, it is not skipped
    from transformers import AutoTokenizer

    out = tmp_path / "out"
    with FakeOpenAIServer(handler=model) as srv:
        run_pipeline(_config(write_seeds(tmp_path / "src"), srv.base_url, "local"), out)
    train = datasets.load_from_disk(str(out / "dataset"))["train"]
    assert train.num_rows == 2  # the two verified samples of tests/test_run_e2e.py

    gguf = model_file("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    lm = _trainable_model(gguf)
    before = {k: v.detach().clone() for k, v in lm.named_parameters()}

    args = trl.SFTConfig(
        output_dir=str(tmp_path / "sft"), max_steps=MAX_STEPS, per_device_train_batch_size=2,
        max_length=MAX_LENGTH, learning_rate=1e-4, logging_steps=1, save_strategy="no",
        eval_strategy="no", report_to="none", use_cpu=True, dataloader_num_workers=0,
        disable_tqdm=True, seed=0,
        # SFTConfig defaults both to True; on a CPU they only slow the few steps down.
        bf16=False, gradient_checkpointing=False)
    trainer = trl.SFTTrainer(model=lm, args=args, train_dataset=train,
                             processing_class=tokenizer)

    # Every prepared example is the chat template applied to that row's `messages`.
    for i, row in enumerate(train):
        ids = trainer.train_dataset[i]["input_ids"]
        want = tokenizer.apply_chat_template(row["messages"], tokenize=True)
        want = want["input_ids"] if hasattr(want, "keys") else want  # BatchEncoding or list
        assert ids == want[:MAX_LENGTH]
    text = tokenizer.decode(trainer.train_dataset[0]["input_ids"])
    first = train[0]
    assert f"<|im_start|>user\n{first['instruction'][:80]}" in text
    assert tokenizer.apply_chat_template(first["messages"], tokenize=False).startswith(text)

    result = trainer.train()

    assert trainer.state.global_step == MAX_STEPS
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == MAX_STEPS and all(math.isfinite(x) and x > 0 for x in losses), losses
    assert math.isfinite(result.training_loss)
    unchanged = [k for k, v in lm.named_parameters() if torch.equal(v.detach(), before[k])]
    assert not unchanged, f"weights that did not move: {unchanged}"
    assert not list((tmp_path / "sft").glob("checkpoint-*"))
