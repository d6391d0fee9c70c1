"""Parameter accounting against PEFT's counts and the bytes of the saved adapter file."""
import pytest
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from tiny_models import tiny_bert, tiny_gpt2, tiny_llama
from trainer.adapter_io import save_adapter
from trainer.config import LoraSettings
from trainer.inject import apply_lora
from trainer.params import parameter_report


def _report_and_adapter_file(builder, settings, task, folder):
    model, _ = builder()
    handle = apply_lora(model, settings, task)
    report = parameter_report(model)
    save_adapter(model, folder, base_model_name_or_path="tiny", task=task, settings=settings,
                 target_modules=handle.target_modules, modules_to_save=handle.modules_to_save)
    tensors = load_file(folder / "adapter_model.safetensors")
    return report, handle, sum(t.numel() * t.element_size() for t in tensors.values())


@pytest.mark.parametrize("builder", [tiny_llama, tiny_gpt2])
def test_causal_lm_counts_match_peft_and_the_saved_file(tmp_path, builder):
    settings = LoraSettings(rank=4, alpha=8, targets="attention+mlp")
    report, handle, file_bytes = _report_and_adapter_file(builder, settings, "causal-lm", tmp_path)
    peft_model = get_peft_model(builder()[0], LoraConfig(r=4, lora_alpha=8, target_modules=handle.target_modules))
    peft_trainable, peft_total = peft_model.get_nb_trainable_parameters()
    base = builder()[0]
    base_bytes = sum(p.numel() * p.element_size() for p in base.parameters())

    assert (report["trainable"], report["total"]) == (peft_trainable, peft_total)
    assert report["percent"] == pytest.approx(100 * peft_trainable / peft_total)
    assert report["adapter_bytes"] == file_bytes == 4 * peft_trainable
    assert report["base_model_bytes"] == base_bytes
    assert report["ratio"] == pytest.approx(file_bytes / base_bytes)


def test_classification_counts_include_the_trained_head_once(tmp_path):
    settings = LoraSettings(rank=4, alpha=8, targets="attention")
    report, _, file_bytes = _report_and_adapter_file(tiny_bert, settings, "classification", tmp_path)
    base = tiny_bert()[0]
    head = sum(p.numel() for p in base.classifier.parameters())
    lora = 2 * 4 * (4 * 32 + 4 * 32)  # 2 layers x 4 projections x (A: 4x32 + B: 32x4)
    assert report["trainable"] == lora + head
    assert report["total"] == sum(p.numel() for p in base.parameters()) + lora
    assert report["adapter_bytes"] == file_bytes == 4 * (lora + head)
