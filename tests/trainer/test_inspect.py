"""Describing a model without loading its weights: counts and shapes must equal a real load's."""
import json
import shutil

import pytest
import torch
from transformers.pytorch_utils import Conv1D

from trainer.errors import ConfigError
from trainer.inspect_model import inspect, safetensors_header
from trainer.models import load_model


def _real_linear_layers(model) -> list[tuple[str, int, int]]:
    layers = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            layers.append((name, module.weight.shape[1], module.weight.shape[0]))  # weight is (out, in)
        elif isinstance(module, Conv1D):
            layers.append((name, module.weight.shape[0], module.weight.shape[1]))  # weight is (in, out)
    return layers


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir", "tiny_neox_dir", "tiny_bert_dir"])
def test_counts_and_linear_shapes_equal_a_real_load(fixture, request):
    folder = request.getfixturevalue(fixture)
    info = inspect(str(folder))
    model, _ = load_model(str(folder), info["task"])
    assert info["total_params"] == sum(p.numel() for p in model.parameters())
    assert [(layer["name"], layer["in_features"], layer["out_features"]) for layer in info["linear_layers"]] \
        == _real_linear_layers(model)
    assert info["size_bytes"] == 4 * info["total_params"]


def test_minilm_as_a_classifier_counts_the_new_head(minilm_dir):
    info = inspect("demo/minilm-l6", task="classification", num_labels=4)
    model, _ = load_model("demo/minilm-l6", "classification", num_labels=4)
    assert info["total_params"] == sum(p.numel() for p in model.parameters())
    assert info["num_labels"] == 4 and info["task"] == "classification" and info["demo"] is True
    heads = {layer["name"]: (layer["in_features"], layer["out_features"]) for layer in info["linear_layers"]
             if layer["head"]}
    assert heads == {"bert.pooler.dense": (384, 384), "classifier": (384, 4)}
    assert len(info["linear_layers"]) - len(heads) == 6 * 6  # q, k, v, attention output, intermediate, output
    assert (info["hidden_size"], info["num_layers"], info["vocab_size"], info["max_positions"]) \
        == (384, 6, 30522, 512)
    assert info["has_chat_template"] is False


def test_encoder_saved_bare_defaults_to_classification_and_generators_to_causal_lm(minilm_dir, tiny_gpt2_dir):
    minilm = inspect("demo/minilm-l6")
    assert minilm["task"] == "classification" and minilm["tasks"] == ["classification"]
    gpt2 = inspect(str(tiny_gpt2_dir))
    assert gpt2["task"] == "causal-lm" and gpt2["architecture"] == "GPT2LMHeadModel"
    assert gpt2["tasks"] == ["causal-lm", "classification"]
    assert gpt2["has_chat_template"] is True


def test_output_head_is_flagged_even_when_tied(tiny_llama_dir):
    heads = [layer["name"] for layer in inspect(str(tiny_llama_dir))["linear_layers"] if layer["head"]]
    assert heads == ["lm_head"]


def test_weights_are_never_read(tmp_path, tiny_llama_dir):
    """Corrupting every byte after the safetensors header changes nothing: only the header is read."""
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_llama_dir, folder)
    weights = folder / "model.safetensors"
    header_end = 8 + int.from_bytes(weights.read_bytes()[:8], "little")
    data = weights.read_bytes()
    weights.write_bytes(data[:header_end] + b"\xff" * 16)
    assert inspect(str(folder))["total_params"] == inspect(str(tiny_llama_dir))["total_params"]


def test_dtype_and_sizes_come_from_the_checkpoint(tmp_path, tiny_llama_dir):
    model, tokenizer = load_model(str(tiny_llama_dir), "causal-lm", dtype="bfloat16")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    info = inspect(str(tmp_path))
    assert info["dtype"] == "bfloat16"
    assert info["size_bytes"] == 2 * info["total_params"]
    assert info["file_bytes"] == (tmp_path / "model.safetensors").stat().st_size
    header = safetensors_header(tmp_path / "model.safetensors")
    assert {tensor["dtype"] for tensor in header.values()} == {"BF16"}


def test_result_is_plain_json(tiny_bert_dir):
    info = inspect(str(tiny_bert_dir))
    assert json.loads(json.dumps(info)) == info


def test_task_the_architecture_cannot_do_is_a_config_error(tmp_path):
    from transformers import T5Config

    T5Config(d_model=8, d_ff=16, num_layers=1, num_heads=2, d_kv=4, vocab_size=32).save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="cannot be used for causal-lm") as caught:
        inspect(str(tmp_path), task="causal-lm")
    assert caught.value.field == "task"
