"""Merged export: a plain transformers folder computing what base + adapter computed."""
import json

import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

import tiny_models
from trainer.adapter_io import save_adapter
from trainer.config import LoraSettings
from trainer.inject import apply_lora
from trainer.merge import merge_to_folder

TOKENS = torch.tensor([[5, 80, 81, 90, 100, 44], [5, 70, 71, 72, 73, 74]])


def _adapter(kind, task, folder, settings, dtype=None, label_mapping=None):
    model, _ = tiny_models.BUILDERS[kind]()
    if dtype is not None:
        model.to(dtype)
    handle = apply_lora(model, settings, task)
    tiny_models.randomize_lora(model)
    return save_adapter(model, folder, base_model_name_or_path="tiny", task=task, settings=settings,
                        target_modules=handle.target_modules, modules_to_save=handle.modules_to_save,
                        label_mapping=label_mapping)


def test_merged_causal_lm_folder_loads_with_transformers_alone_and_matches_peft(tmp_path, tiny_llama_dir):
    adapter = _adapter("llama", "causal-lm", tmp_path / "adapter", LoraSettings(rank=4, alpha=8,
                                                                               targets="attention+mlp"))
    out = merge_to_folder(str(tiny_llama_dir), adapter, tmp_path / "merged")

    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_llama_dir), adapter).eval()
    torch.testing.assert_close(merged(input_ids=TOKENS).logits, reference(input_ids=TOKENS).logits,
                               rtol=1e-5, atol=1e-5)
    assert not any("lora" in key for key in load_file(out / "model.safetensors"))
    assert (out / "generation_config.json").is_file()
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template == tiny_models.CHAT_TEMPLATE
    assert tokenizer.decode(tokenizer("merged ok").input_ids) == "merged ok"


def test_merged_classifier_keeps_trained_head_and_label_names(tmp_path, tiny_bert_dir):
    labels = {0: "billing", 1: "bug", 2: "other"}
    adapter = _adapter("bert", "classification", tmp_path / "adapter", LoraSettings(rank=4, alpha=8),
                       label_mapping=labels)
    out = merge_to_folder(str(tiny_bert_dir), adapter, tmp_path / "merged")

    merged = AutoModelForSequenceClassification.from_pretrained(out).eval()
    reference = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir),
                                          adapter).eval()
    torch.testing.assert_close(merged(input_ids=TOKENS).logits, reference(input_ids=TOKENS).logits,
                               rtol=1e-5, atol=1e-5)
    assert merged.config.id2label == labels


def test_bf16_base_is_merged_in_float32_and_stays_bf16(tmp_path):
    base_dir = tmp_path / "base"
    model, tokenizer = tiny_models.tiny_llama()
    model.to(torch.bfloat16).save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    adapter = _adapter("llama", "causal-lm", tmp_path / "adapter", LoraSettings(rank=4, alpha=8, targets="q_proj"),
                       dtype=torch.bfloat16)
    out = merge_to_folder(str(base_dir), adapter, tmp_path / "merged")

    merged = load_file(out / "model.safetensors")
    base = load_file(base_dir / "model.safetensors")
    lora = load_file(adapter / "adapter_model.safetensors")
    name = "model.layers.0.self_attn.q_proj"
    a, b = (lora[f"base_model.model.{name}.lora_{x}.weight"] for x in "AB")
    expected = (base[f"{name}.weight"].float() + (b.float() @ a.float()) * 2.0).to(torch.bfloat16)
    assert merged[f"{name}.weight"].dtype == torch.bfloat16
    assert torch.equal(merged[f"{name}.weight"], expected)
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
