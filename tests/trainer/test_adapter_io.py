"""Adapters on disk: PEFT reads ours, we read PEFT's, with the same logits."""
import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from tiny_models import LABELS, randomize_lora, tiny_bert, tiny_gpt2, tiny_llama
from trainer.adapter_io import load_adapter, read_adapter_config, read_label_mapping, save_adapter
from trainer.config import LoraSettings
from trainer.errors import TrainerError
from trainer.inject import apply_lora, lora_modules

TOKENS = torch.tensor([[5, 80, 81, 90, 100, 44], [5, 70, 71, 72, 73, 74]])


def _trained(builder, settings, task):
    model, _ = builder()
    handle = apply_lora(model, settings, task)
    randomize_lora(model)
    if handle.modules_to_save:
        with torch.no_grad():
            for name in handle.modules_to_save:
                for p in model.get_submodule(name).parameters():
                    p.add_(torch.randn_like(p))
    return model.eval(), handle


def _save(model, handle, folder, settings, task, base_path, label_mapping=None):
    return save_adapter(model, folder, base_model_name_or_path=str(base_path), task=task, settings=settings,
                        target_modules=handle.target_modules, modules_to_save=handle.modules_to_save,
                        label_mapping=label_mapping)


def test_saved_adapter_has_peft_config_and_key_names(tmp_path, tiny_llama_dir):
    settings = LoraSettings(rank=4, alpha=8, dropout=0.1, targets="q_proj,v_proj")
    model, handle = _trained(tiny_llama, settings, "causal-lm")
    _save(model, handle, tmp_path, settings, "causal-lm", tiny_llama_dir)
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "CAUSAL_LM"
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (4, 8, 0.1)
    assert config["bias"] == "none" and config["use_rslora"] is False and config["fan_in_fan_out"] is False
    assert config["base_model_name_or_path"] == str(tiny_llama_dir)
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    assert len(keys) == 2 * 2 * 2
    assert "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in keys
    assert "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight" in keys


@pytest.mark.parametrize("builder,kind", [(tiny_llama, "llama"), (tiny_gpt2, "gpt2")])
def test_peft_loads_our_causal_adapter_with_the_same_logits(tmp_path_factory, builder, kind):
    import tiny_models

    base_dir = tiny_models.save_tiny(kind, tmp_path_factory.mktemp("base"))
    adapter_dir = tmp_path_factory.mktemp("adapter")
    settings = LoraSettings(rank=4, alpha=16, targets="attention+mlp", rslora=True)
    model, handle = _trained(builder, settings, "causal-lm")
    _save(model, handle, adapter_dir, settings, "causal-lm", base_dir)

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), adapter_dir).eval()
    torch.testing.assert_close(peft_model(input_ids=TOKENS).logits, model(input_ids=TOKENS).logits,
                               rtol=1e-5, atol=1e-5)


def test_peft_loads_our_classification_adapter_with_its_trained_head(tmp_path, tiny_bert_dir):
    settings = LoraSettings(rank=4, alpha=8, targets="attention")
    model, handle = _trained(tiny_bert, settings, "classification")
    assert handle.modules_to_save == ["classifier"]
    _save(model, handle, tmp_path, settings, "classification", tiny_bert_dir, label_mapping=dict(enumerate(LABELS)))
    keys = set(load_file(tmp_path / "adapter_model.safetensors"))
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= keys
    assert read_label_mapping(tmp_path) == dict(enumerate(LABELS))

    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    peft_model = PeftModel.from_pretrained(base, tmp_path).eval()
    torch.testing.assert_close(peft_model(input_ids=TOKENS).logits, model(input_ids=TOKENS).logits,
                               rtol=1e-5, atol=1e-5)


# GPT-2's Conv1D stores its weight (in, out): PEFT writes fan_in_fan_out adapters for it.
PEFT_WRITTEN = {"llama": (tiny_llama, "CAUSAL_LM", ["q_proj", "v_proj"]),
                "gpt2": (tiny_gpt2, "CAUSAL_LM", ["c_attn", "c_fc"]),
                "bert": (tiny_bert, "SEQ_CLS", ["query", "value"])}


@pytest.mark.parametrize("kind", list(PEFT_WRITTEN))
def test_we_load_a_peft_adapter_with_the_same_logits(tmp_path, kind):
    builder, task_type, targets = PEFT_WRITTEN[kind]
    peft_model = get_peft_model(builder()[0], LoraConfig(task_type=task_type, r=2, lora_alpha=5,
                                                         target_modules=targets, fan_in_fan_out=kind == "gpt2"))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    peft_model.save_pretrained(tmp_path)
    peft_model.eval()

    if kind == "gpt2":
        assert json.loads((tmp_path / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    ours = load_adapter(builder()[0], tmp_path).eval()
    assert len(list(lora_modules(ours))) == 4
    torch.testing.assert_close(ours(input_ids=TOKENS).logits, peft_model(input_ids=TOKENS).logits,
                               rtol=1e-5, atol=1e-5)


def test_round_trip_through_our_own_loader_restores_the_weights(tmp_path):
    settings = LoraSettings(rank=3, alpha=6, targets="all-linear")
    model, handle = _trained(tiny_llama, settings, "causal-lm")
    _save(model, handle, tmp_path, settings, "causal-lm", "tiny")
    loaded = load_adapter(tiny_llama()[0], tmp_path).eval()
    torch.testing.assert_close(loaded(input_ids=TOKENS).logits, model(input_ids=TOKENS).logits)
    assert read_adapter_config(tmp_path)["target_modules"] == handle.target_modules


def test_loading_into_a_model_with_the_same_lora_layers_only_copies_weights(tmp_path):
    settings = LoraSettings(rank=2, alpha=4, targets="attention")
    model, handle = _trained(tiny_llama, settings, "causal-lm")
    _save(model, handle, tmp_path, settings, "causal-lm", "tiny")
    fresh, _ = tiny_llama()
    apply_lora(fresh, settings, "causal-lm")
    load_adapter(fresh, tmp_path)
    torch.testing.assert_close(fresh.eval()(input_ids=TOKENS).logits, model(input_ids=TOKENS).logits)
    assert all(p.requires_grad for _, m in lora_modules(fresh) for p in m.lora_A.parameters())


def test_adapter_for_another_model_is_refused_with_a_clear_message(tmp_path):
    settings = LoraSettings(rank=2, alpha=4, targets="attention")
    model, handle = _trained(tiny_llama, settings, "causal-lm")
    _save(model, handle, tmp_path, settings, "causal-lm", "tiny")
    with pytest.raises(TrainerError, match="does not fit this base model"):
        load_adapter(tiny_gpt2()[0], tmp_path)


def test_missing_or_foreign_adapter_folder_is_a_trainer_error(tmp_path):
    with pytest.raises(TrainerError, match="adapter_config.json is missing"):
        read_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "IA3"}))
    with pytest.raises(TrainerError, match="only LoRA"):
        read_adapter_config(tmp_path)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "use_dora": True}))
    with pytest.raises(TrainerError, match="use_dora"):
        read_adapter_config(tmp_path)
