"""Quantized (bitsandbytes NF4 / int8) and bf16 bases: our LoRA on them against PEFT's on the very same base,
the adapter read back by PEFT on quantized and unquantized bases, training through the CLI, and merge.

bitsandbytes 0.50 runs its 4-bit and 8-bit layers on this CPU, so these run here exactly as they would on a GPU
(bar the kernels). Bases are loaded with trainer.models.load_model for both sides: "the same bitsandbytes base".
"""
import json

import pytest
import torch
import torch.nn.functional as F
from peft import PeftModel

from tiny_models import peft_twin, randomize_lora
from trainer.adapter_io import load_adapter, save_adapter
from trainer.config import LoraSettings
from trainer.data.render import IGNORE_INDEX
from trainer.errors import TrainerError
from trainer.inject import apply_lora, lora_modules
from trainer.models import load_model
from trainer.quantized import is_quantized_linear, quantized_load_kwargs, resolve_dtype
from trainer.streamed_weights import streamed_checkpoint

TOKENS = torch.tensor([[5, 80, 81, 90, 100, 44, 61, 62], [5, 70, 71, 72, 73, 74, 75, 76]])
SETTINGS = LoraSettings(rank=4, alpha=8, dropout=0.0, targets="attention+mlp")


def _ours_and_peft(base_dir, **load):
    """Our LoRA and PEFT's, with the same adapter weights (B random so the update shows), each on its own copy
    of the same base loaded by load_model(**load)."""
    ours, _ = load_model(str(base_dir), "causal-lm", **load)
    handle = apply_lora(ours, SETTINGS, "causal-lm")
    randomize_lora(ours)
    twin = peft_twin(ours, load_model(str(base_dir), "causal-lm", **load)[0], SETTINGS, "causal-lm", handle)
    return ours, twin, handle


def _loss(model):
    """transformers' own mean next-token loss on TOKENS, the same function for both sides."""
    logits = model(input_ids=TOKENS).logits.float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), TOKENS[:, 1:].reshape(-1)), logits


def _lora_grads(model) -> dict[str, torch.Tensor]:
    """LoRA gradients by PEFT's parameter names (ours carry no ".default" adapter name)."""
    return {name.replace(".default", "").removeprefix("base_model.model."): p.grad
            for name, p in model.named_parameters() if "lora_" in name}


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_lora_on_a_quantized_base_matches_peft_on_the_same_base(tiny_llama_dir, quantize):
    ours, twin, handle = _ours_and_peft(tiny_llama_dir, quantize=quantize)
    wrapped = dict(lora_modules(ours))
    assert set(wrapped) == set(handle.target_modules) and len(wrapped) == 2 * 7
    assert all(is_quantized_linear(module.base_layer) for module in wrapped.values())
    assert all(module.lora_A.weight.dtype == torch.float32 for module in wrapped.values())
    ours_loss, ours_logits = _loss(ours.train())
    twin_loss, twin_logits = _loss(twin.train())
    # Both run the identical bitsandbytes kernel on the identical quantized weights for W x, and the LoRA branch
    # in float32 with the same weights; they differ only in the order of float32 operations (scaling applied
    # before or after B, update added in a different node). float32 rounding is ~1e-7 relative per operation;
    # through two layers and the head that stays far below 1e-5 of logits of size ~1, so 1e-5 catches any real
    # difference (a missed layer, a wrong scaling, the wrong base) while allowing reassociation.
    torch.testing.assert_close(ours_logits, twin_logits, rtol=1e-5, atol=1e-5)
    ours_loss.backward()
    twin_loss.backward()
    ours_grads, twin_grads = _lora_grads(ours), _lora_grads(twin)
    assert set(ours_grads) == set(twin_grads) and len(ours_grads) == 2 * 2 * 7
    for name, grad in ours_grads.items():
        # Gradients are sums over 16 tokens of products of the above: same reasoning, a 1e-4 relative margin.
        torch.testing.assert_close(grad, twin_grads[name], rtol=1e-4, atol=1e-6, msg=name)
        assert grad.dtype == torch.float32 and grad.abs().sum() > 0, name


@pytest.mark.parametrize("quantize", ["nf4", "int8"])
def test_a_base_read_tensor_by_tensor_is_the_base_transformers_loads_from_the_mapped_file(tiny_llama_dir, quantize):
    # load_model reads a single-file checkpoint to quantize one tensor at a time (trainer.streamed_weights).
    from transformers import AutoModelForCausalLM

    with streamed_checkpoint(tiny_llama_dir) as checkpoint:
        assert checkpoint is not None and len(checkpoint) == 21  # the path load_model takes for this folder
    streamed, _ = load_model(str(tiny_llama_dir), "causal-lm", quantize=quantize)
    mapped = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir), dtype=torch.float32,
                                                  **quantized_load_kwargs(quantize, torch.float32, "cpu"))
    assert sum(is_quantized_linear(module) for module in streamed.modules()) == 14  # 2 layers x 7 linears
    ours, theirs = streamed.state_dict(), mapped.state_dict()
    assert ours.keys() == theirs.keys()
    for name, tensor in ours.items():
        assert tensor.dtype == theirs[name].dtype and torch.equal(tensor, theirs[name]), name
    assert streamed.generation_config.to_dict() == mapped.generation_config.to_dict()


def test_an_adapter_trained_on_nf4_loads_with_peft_on_the_4bit_and_the_unquantized_base(tmp_path, tiny_llama_dir):
    ours, _, handle = _ours_and_peft(tiny_llama_dir, quantize="nf4")
    save_adapter(ours.eval(), tmp_path, base_model_name_or_path=str(tiny_llama_dir), task="causal-lm",
                 settings=SETTINGS, target_modules=handle.target_modules, modules_to_save=[])
    with torch.no_grad():
        expected_4bit = ours(input_ids=TOKENS).logits
        peft_4bit = PeftModel.from_pretrained(load_model(str(tiny_llama_dir), quantize="nf4")[0], tmp_path)
        torch.testing.assert_close(peft_4bit(input_ids=TOKENS).logits, expected_4bit, rtol=1e-5, atol=1e-5)

        plain_ours = load_adapter(load_model(str(tiny_llama_dir))[0], tmp_path)
        peft_plain = PeftModel.from_pretrained(load_model(str(tiny_llama_dir))[0], tmp_path)
        expected_plain = plain_ours(input_ids=TOKENS).logits
        torch.testing.assert_close(peft_plain(input_ids=TOKENS).logits, expected_plain, rtol=1e-5, atol=1e-5)
    # Two different bases really were used (4-bit rounding of random-init weights this small changes the logits).
    assert not torch.allclose(expected_plain, expected_4bit, atol=1e-3)


def test_bf16_base_runs_the_fused_lora_node_and_matches_peft(tiny_llama_dir):
    ours, twin, _ = _ours_and_peft(tiny_llama_dir, dtype="bfloat16")
    layer = ours.get_submodule("model.layers.0.self_attn.q_proj")
    assert layer.base_layer.weight.dtype == torch.bfloat16 and layer.lora_A.weight.dtype == torch.float32
    ours.train()
    hidden = torch.randn(2, 8, layer.in_features, dtype=torch.bfloat16, requires_grad=True)
    assert type(layer(hidden).grad_fn).__name__ == "_LoraFunctionBackward"  # the fused node, not the fallback
    ours_loss, ours_logits = _loss(ours)
    _, twin_logits = _loss(twin.train())
    # Ours computes the LoRA branch in bf16 (the compute dtype), PEFT in float32 before rounding the sum to bf16.
    # bf16 keeps 8 significant bits (2^-9 = 0.2 % relative rounding); a few such roundings may differ between
    # the two on the way to logits of size ~0.4: measured 0.009 at most, so 0.03 absolute. A missing layer or a
    # wrong scaling moves them by more than that (B is random of size 0.5).
    torch.testing.assert_close(ours_logits, twin_logits, rtol=0, atol=3e-2)
    ours_loss.backward()
    grads = _lora_grads(ours)
    assert len(grads) == 2 * 2 * 7
    assert all(g.dtype == torch.float32 and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    # Gradients are compared per layer against float64 (next test), not with PEFT's here: this random-init
    # model's bf16 gradients are dominated by rounding (PEFT's own bf16 gradients differ from the same model's
    # float32 ones by 6-10x their norm, measured), so no tolerance here could tell a right gradient from a wrong one.


def test_the_fused_node_on_a_bf16_base_matches_a_float64_computation():
    """The layer alone, against y = x Wᵀ + s · x Aᵀ Bᵀ and its gradients computed in float64 from the same values.
    A bf16 output has 2^-9 relative rounding; the branch's inputs are rounded to bf16 too (A, B cast in the node),
    so a few bf16 steps: 2 % relative (of the largest value) is the bound; a wrong formula is off by ~100 %."""
    from trainer.lora import LoraLinear

    torch.manual_seed(0)
    base = torch.nn.Linear(64, 48, bias=True).to(torch.bfloat16).requires_grad_(False)
    layer = LoraLinear(base, rank=4, alpha=8).train()
    torch.nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(3, 5, 64, dtype=torch.bfloat16, requires_grad=True)
    y = layer(x)
    assert type(y.grad_fn).__name__ == "_LoraFunctionBackward" and y.dtype == torch.bfloat16
    upstream = torch.randn_like(y)
    y.backward(upstream)

    x64, w64, b64 = x.detach().double().requires_grad_(), base.weight.double(), base.bias.double()
    a64 = layer.lora_A.weight.detach().double().requires_grad_()
    bb64 = layer.lora_B.weight.detach().double().requires_grad_()
    y64 = x64 @ w64.T + b64 + layer.scaling * (x64 @ a64.T) @ bb64.T
    y64.backward(upstream.double())
    for got, expected in ((y, y64), (x.grad, x64.grad), (layer.lora_A.weight.grad, a64.grad),
                          (layer.lora_B.weight.grad, bb64.grad)):
        error = (got.double() - expected).abs().max() / expected.abs().max()
        assert error < 0.02, error
    assert layer.lora_A.weight.grad.dtype == layer.lora_B.weight.grad.dtype == torch.float32


def test_merge_on_a_quantized_lora_layer_is_refused_rather_than_corrupting_packed_weights(tiny_llama_dir):
    model, _, _ = _ours_and_peft(tiny_llama_dir, quantize="nf4")
    layer = model.get_submodule("model.layers.0.self_attn.q_proj")
    with pytest.raises(TrainerError, match="dequantize the base first"):
        layer.merge()


def test_auto_dtype_is_fp32_on_cpu_and_explicit_dtypes_are_kept():
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16 and resolve_dtype("fp16", "cuda") == torch.float16


def test_cli_trains_on_nf4_and_peft_on_a_4bit_base_reproduces_its_eval_loss_and_merge(tmp_path, tiny_llama_dir):
    from test_cli import _cli, _json, _write_jsonl

    rows = [{"prompt": f"{a} plus {b} is", "completion": f" {a + b}"} for a in range(8) for b in range(4)]
    train_file = _write_jsonl(tmp_path / "train.jsonl", rows[:24])
    eval_file = _write_jsonl(tmp_path / "eval.jsonl", rows[24:])
    out = tmp_path / "out"
    metrics = _json(_cli("train", "--model", tiny_llama_dir, "--data", train_file, "--eval-data", eval_file,
                         "--out", out, "--quantize", "nf4", "--max-steps", "4", "--batch-size", "8", "--lr", "1e-2",
                         "--targets", "attention+mlp", "--merge"))
    assert (metrics["quantize"], metrics["dtype"]) == ("nf4", "fp32")
    assert json.loads((out / "metrics.json").read_text())["quantize"] == "nf4"
    assert metrics["final_eval"]["eval_loss"] < metrics["base_eval"]["eval_loss"]

    base, tokenizer = load_model(str(tiny_llama_dir), quantize="nf4")
    peft_model = PeftModel.from_pretrained(base, out / "adapter").eval()
    assert is_quantized_linear(peft_model.base_model.model.model.layers[0].self_attn.q_proj.base_layer)
    total, count = 0.0, 0
    with torch.no_grad():  # an independent eval: one row at a time, transformers' logits, prompt tokens unlabelled
        for row in rows[24:]:
            prompt = tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]
            completion = tokenizer(row["completion"], add_special_tokens=False)["input_ids"]
            ids = prompt + completion + [tokenizer.eos_token_id]  # no BOS: the tiny tokenizer adds none
            labels = torch.tensor([IGNORE_INDEX] * len(prompt) + completion + [tokenizer.eos_token_id])
            logits = peft_model(input_ids=torch.tensor([ids])).logits[0, :-1]
            total += F.cross_entropy(logits, labels[1:], ignore_index=IGNORE_INDEX, reduction="sum").item()
            count += int((labels[1:] != IGNORE_INDEX).sum())
    assert count == metrics["final_eval"]["eval_tokens"]
    assert total / count == pytest.approx(metrics["final_eval"]["eval_loss"], rel=1e-5)

    # The merge dequantized the 4-bit base into the checkpoint's dtype: a plain model computing what the 4-bit
    # base with the adapter computes (dequantized weights are exactly the values the 4-bit kernel multiplies by).
    merged, _ = load_model(str(out / "merged"))
    assert not any(is_quantized_linear(m) for m in merged.modules())
    assert merged.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=TOKENS).logits, peft_model(input_ids=TOKENS).logits,
                                   rtol=1e-4, atol=1e-4)


def test_a_classifier_on_a_bf16_nf4_base_trains_its_head_in_float32_and_learns(tmp_path, tiny_bert_dir):
    from safetensors.torch import load_file

    from trainer.config import TrainConfig
    from trainer.train import train

    rows = [{"text": f"{word} {i}", "label": word} for i in range(10) for word in ("refund", "crash", "hello")]
    data = tmp_path / "c.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    metrics = train(TrainConfig(model=str(tiny_bert_dir), data=str(data), out=str(tmp_path / "run"),
                                task="classification", batch_size=8, lr=3e-2, max_steps=30, eval_fraction=0.3,
                                checkpoint_every=0, quantize="nf4", dtype="bf16", lora=LoraSettings(dropout=0.0)))
    assert (metrics["quantize"], metrics["dtype"]) == ("nf4", "bf16")
    saved = load_file(str(tmp_path / "run" / "adapter" / "adapter_model.safetensors"))
    head = [key for key in saved if "classifier" in key]
    assert head and all(saved[key].dtype == torch.float32 for key in saved)
    # bf16 rounding and a 4-bit base still learn the three words well below the untrained loss.
    assert metrics["final_eval"]["eval_loss"] < 0.7 * metrics["base_eval"]["eval_loss"]
