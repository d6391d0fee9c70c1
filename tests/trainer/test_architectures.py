"""Every architecture we support, each through the same matrix, on tiny random-init configs (tiny_models.py):

- the target presets resolve to the architecture's own projections (not the all-linear fallback);
- the PEFT round trip: PEFT loads our adapter, we load PEFT's, with equal outputs;
- the merged export computes what adapter-on-base computes;
- causal LMs: the hidden-state loss (trainer.lm_loss) equals transformers' own loss, value and gradients.

Causal LMs: Llama 3, Qwen2, Qwen3, Mistral, Gemma 2, Gemma 3 (text), Phi-3, GPT-NeoX, GPT-2; classifiers: BERT,
RoBERTa, DeBERTa-v2. TIED lists the ones whose output layer shares the input embedding's weight.
"""
import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, DebertaV2Config, DebertaV2Model

import tiny_models
from tiny_models import LABELS, randomize_lora
from trainer.adapter_io import load_adapter, save_adapter
from trainer.config import LoraSettings
from trainer.estimate import estimate
from trainer.evaluate import batch_loss_sum
from trainer.inference import load_for_inference
from trainer.inspect_model import inspect
from trainer.inject import apply_lora, lora_modules
from trainer.lm_loss import supports_hidden_state_loss
from trainer.merge import merge_to_folder
from trainer.params import parameter_report
from trainer.targets import linear_layer_names, resolve_targets

# Per architecture: the suffixes of the "attention" preset, then the MLP's ("attention+mlp" adds them).
_LLAMA = (["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "up_proj", "down_proj"])
_BERT = (["query", "key", "value", "attention.output.dense"], ["intermediate.dense", "output.dense"])
CAUSAL = {"llama3": _LLAMA, "qwen2": _LLAMA, "qwen3": _LLAMA, "mistral": _LLAMA, "gemma2": _LLAMA,
          "gemma3_text": _LLAMA, "phi3": (["qkv_proj", "o_proj"], ["gate_up_proj", "down_proj"]),
          "gpt_neox": (["query_key_value", "attention.dense"], ["dense_h_to_4h", "dense_4h_to_h"]),
          "gpt2": (["c_attn", "attn.c_proj"], ["c_fc", "mlp.c_proj"])}
CLASSIFIERS = {"bert": _BERT, "roberta": _BERT,
               "deberta-v2": (["query_proj", "key_proj", "value_proj", "attention.output.dense"], _BERT[1])}
ALL = {**CAUSAL, **CLASSIFIERS}
TIED = {"llama3", "qwen2", "gemma2", "gemma3_text", "gpt2"}
TOKENS = torch.tensor([[5, 80, 81, 90, 100, 44, 120, 33, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72],
                       [5, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88]])
SETTINGS = LoraSettings(rank=4, alpha=8, dropout=0.0, targets="all-linear")


def _task(kind: str) -> str:
    return "causal-lm" if kind in CAUSAL else "classification"


def _auto(kind: str):
    return AutoModelForCausalLM if kind in CAUSAL else AutoModelForSequenceClassification


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory):
    """kind -> the saved tiny base model folder (built on first use)."""
    saved = {}

    def base_dir(kind):
        if kind not in saved:
            saved[kind] = tiny_models.save_tiny(kind, tmp_path_factory.mktemp(f"base-{kind}"))
        return saved[kind]
    return base_dir


def _trained(kind: str, settings: LoraSettings = SETTINGS):
    """Base seed 0 with LoRA on `settings.targets`, every LoRA B and every trained head made non-zero/random."""
    model, _ = tiny_models.BUILDERS[kind]()
    handle = apply_lora(model, settings, _task(kind))
    randomize_lora(model)
    with torch.no_grad():
        for name in handle.modules_to_save:
            for param in model.get_submodule(name).parameters():
                param.add_(torch.randn_like(param) * 0.5)
    return model.eval(), handle


def _save(model, handle, folder, base_dir, kind):
    return save_adapter(model, folder, base_model_name_or_path=str(base_dir), task=_task(kind), settings=SETTINGS,
                        target_modules=handle.target_modules, modules_to_save=handle.modules_to_save,
                        label_mapping=dict(enumerate(LABELS)) if kind in CLASSIFIERS else None)


def _logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=TOKENS, attention_mask=torch.ones_like(TOKENS)).logits


@pytest.mark.parametrize("kind", list(ALL))
def test_target_presets_pick_the_architectures_own_projections(kind, base_dirs):
    model, _ = tiny_models.BUILDERS[kind]()
    attention, mlp = ALL[kind]
    linears = linear_layer_names(model)

    def named(suffixes):
        return [name for name in linears if any(name == s or name.endswith("." + s) for s in suffixes)]
    chosen = resolve_targets(model, "attention")
    assert chosen == named(attention) and len(chosen) == len(attention) * tiny_models.LAYERS
    assert resolve_targets(model, "attention+mlp") == named(attention + mlp) == linears
    assert resolve_targets(model, "all-linear") == linears
    head = model.get_output_embeddings() if kind in CAUSAL else None
    assert (head is not None and head.weight is model.get_input_embeddings().weight) == (kind in TIED)

    # The form's torch-free estimate, from the recorded layer shapes, counts what the real model trains.
    estimated = estimate(inspect(str(base_dirs(kind)), task=_task(kind)), targets="attention", rank=4,
                         task=_task(kind))
    handle = apply_lora(model, LoraSettings(rank=4, targets="attention"), _task(kind))
    report = parameter_report(model)
    assert [estimated[key] for key in ("total", "trainable")] == [report["total"], report["trainable"]]
    assert estimated["target_modules"] == sorted(handle.target_modules)


@pytest.mark.parametrize("kind", list(ALL))
def test_peft_loads_our_adapter_with_equal_outputs(kind, base_dirs, tmp_path):
    base_dir = base_dirs(kind)
    model, handle = _trained(kind)
    adapter = _save(model, handle, tmp_path, base_dir, kind)
    theirs = PeftModel.from_pretrained(_auto(kind).from_pretrained(base_dir), adapter).eval()
    torch.testing.assert_close(_logits(theirs), _logits(model), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(ALL))
def test_we_load_a_peft_written_adapter_with_equal_outputs(kind, tmp_path):
    base, _ = tiny_models.BUILDERS[kind]()
    targets = resolve_targets(base, "attention+mlp")
    config = LoraConfig(task_type="CAUSAL_LM" if kind in CAUSAL else "SEQ_CLS", r=2, lora_alpha=5,
                        target_modules=targets, fan_in_fan_out=kind == "gpt2")
    theirs = get_peft_model(base, config)
    with torch.no_grad():
        for param in theirs.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.3)
    theirs.save_pretrained(tmp_path)
    ours = load_adapter(tiny_models.BUILDERS[kind]()[0], tmp_path).eval()
    expected = _logits(theirs.eval())
    assert not torch.allclose(expected, _logits(tiny_models.BUILDERS[kind]()[0]), atol=1e-3)  # the adapter matters
    torch.testing.assert_close(_logits(ours), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(ALL))
def test_merged_export_equals_adapter_on_base(kind, base_dirs, tmp_path):
    base_dir = base_dirs(kind)
    model, handle = _trained(kind)
    adapter = _save(model, handle, tmp_path / "adapter", base_dir, kind)
    merged_dir = merge_to_folder(str(base_dir), adapter, tmp_path / "merged")
    merged = _auto(kind).from_pretrained(merged_dir).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    on_base, _ = load_for_inference(str(base_dir), adapter_dir=adapter)
    torch.testing.assert_close(_logits(merged), _logits(on_base), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(_logits(on_base), _logits(model), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", list(CAUSAL))
def test_hidden_state_loss_equals_transformers_loss_and_gradients(kind):
    model, _ = _trained(kind)
    batch = tiny_models.lm_batch(tiny_models.tiny_tokenizer())
    predicted = int((batch["labels"][:, 1:] != -100).sum())
    assert supports_hidden_state_loss(model)

    ours, our_grads = tiny_models.loss_and_grads(model, batch_loss_sum(model, batch, "causal-lm", "cpu"))
    theirs, their_grads = tiny_models.loss_and_grads(model, model(**batch).loss * predicted)  # their mean, as a sum

    assert ours == pytest.approx(theirs, rel=1e-5)
    assert our_grads.keys() == their_grads.keys() and len(our_grads) == 2 * len(list(lora_modules(model)))
    for name, grad in our_grads.items():
        # float32 sums in another order: entries near zero get an absolute tolerance at the tensor's own scale.
        scale = their_grads[name].abs().max().item()
        torch.testing.assert_close(grad, their_grads[name], rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("kind", ["gemma2", "gemma3_text"])
def test_gemma_soft_capping_is_part_of_the_hidden_state_loss(kind):
    """Gemma 2/3 cap their logits at ±final_logit_softcapping, here set so that it matters: the loss with the cap
    (equal to transformers' in the test above, within a relative 1e-5) differs from the loss without it by more
    than 100 times that tolerance."""
    model, _ = _trained(kind)
    batch = tiny_models.lm_batch(tiny_models.tiny_tokenizer())
    with torch.no_grad():
        capped = batch_loss_sum(model, batch, "causal-lm", "cpu").item()
        model.config.final_logit_softcapping = None
        uncapped = batch_loss_sum(model, batch, "causal-lm", "cpu").item()
    assert abs(capped - uncapped) > 100 * 1e-5 * abs(capped)


def test_deberta_pooler_missing_from_a_pretrained_backbone_is_trained_and_saved(tmp_path):
    """A pretrained DeBERTa checkpoint is a backbone without the classification model's top-level pooler, so
    the pooler starts random on every load: it must travel with the adapter, like the classifier."""
    tokenizer = tiny_models.tiny_tokenizer(chat_template=False, encoder=True)
    config = DebertaV2Config(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    DebertaV2Model(config).save_pretrained(tmp_path / "backbone")
    tokenizer.save_pretrained(tmp_path / "backbone")
    labels = dict(enumerate(LABELS))

    torch.manual_seed(1)
    model = AutoModelForSequenceClassification.from_pretrained(tmp_path / "backbone", id2label=labels)
    handle = apply_lora(model, SETTINGS, "classification")
    assert handle.modules_to_save == ["pooler", "classifier"]
    randomize_lora(model)
    adapter = save_adapter(model.eval(), tmp_path / "adapter", base_model_name_or_path="backbone",
                           task="classification", settings=SETTINGS, target_modules=handle.target_modules,
                           modules_to_save=handle.modules_to_save, label_mapping=labels)
    for seed in (2, 3):  # a fresh random pooler each load, overwritten by the adapter's
        torch.manual_seed(seed)
        reloaded, _ = load_for_inference(str(tmp_path / "backbone"), adapter_dir=adapter)
        torch.testing.assert_close(_logits(reloaded), _logits(model), rtol=1e-5, atol=1e-5)
