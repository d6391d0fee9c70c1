"""Sample answers on a real tiny-Llama run: written at step 0, at every periodic eval and at the end with a fixed
seed, so each checkpoint's answers can be written again from its weights; typed prompts replace the held-out ones."""
import json

import pytest

import tiny_models
from trainer import sample_answers
from trainer.adapter_io import load_adapter
from trainer.config import LoraSettings, TrainConfig
from trainer.errors import ConfigError
from trainer.models import load_model
from trainer.train import train

WORDS = ["red", "blue", "green", "gold", "pink", "gray", "teal", "navy"]


def _config(tmp_path, model_dir, **changes):
    data = tmp_path / "lm.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {w}:", "completion": f" {w} {w}"}) + "\n"
                            for w in WORDS * 2))
    values = dict(model=str(model_dir), data=str(data), out=str(tmp_path / "run"), batch_size=4, lr=3e-2,
                  max_steps=4, eval_every=2, eval_fraction=0.25, sample_answers=True, lora=LoraSettings(rank=4, dropout=0.0))
    return TrainConfig(**{**values, **changes})


def test_answers_are_written_at_step_0_every_eval_and_the_end_and_match_the_saved_adapter(tmp_path, tiny_llama_dir):
    metrics = train(_config(tmp_path, tiny_llama_dir, keep="last"))
    samples = metrics["samples"]
    assert [(c["step"], c["stage"]) for c in samples["checkpoints"]] == [(0, "base"), (2, "during"), (4, "final")]
    assert len(samples["prompts"]) == 4 and all(p.startswith("Say ") for p in samples["prompts"])  # held out
    base, _ = load_model(str(tiny_llama_dir), "causal-lm")
    tuned, tokenizer = load_model(str(tiny_llama_dir), "causal-lm")
    load_adapter(tuned, tmp_path / "run" / "adapter")
    ids = [tokenizer(prompt)["input_ids"] for prompt in samples["prompts"]]
    assert sample_answers.answers(base, tokenizer, ids) == samples["checkpoints"][0]["answers"]
    assert sample_answers.answers(tuned, tokenizer, ids) == samples["checkpoints"][-1]["answers"]
    assert samples["checkpoints"][-1]["answers"] != samples["checkpoints"][0]["answers"]


def test_typed_sample_prompts_are_answered_instead_and_more_than_ten_are_refused(tmp_path, tiny_llama_dir):
    metrics = train(_config(tmp_path, tiny_llama_dir, sample_prompts=["Say teal:", "Hello"], max_steps=2))
    assert train(_config(tmp_path, tiny_llama_dir, sample_answers=False, max_steps=1))["samples"] is None
    assert metrics["samples"]["prompts"] == ["Say teal:", "Hello"]
    assert all(len(c["answers"]) == 2 for c in metrics["samples"]["checkpoints"])
    with pytest.raises(ConfigError, match="sample_prompts"):
        _config(tmp_path, tiny_llama_dir, sample_prompts=["x"] * 11).check()


def test_nul_characters_in_an_answer_are_shown_as_replacement_characters():
    # PostgreSQL's JSON columns refuse U+0000, and an untrained model can decode to it.
    assert sample_answers.readable("a\x00b\x00") == "a\ufffdb\ufffd"
