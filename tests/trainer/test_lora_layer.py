"""The LoRA layer against PEFT (the reference) and against its own formula."""
import math
from functools import partial

import pytest
import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from tiny_models import peft_twin, randomize_lora, tiny_bert, tiny_gpt2, tiny_llama, tiny_neox
from trainer.config import LoraSettings
from trainer.inject import apply_lora, lora_modules, merge_and_unload
from trainer.lora import LoraLinear, _LoraFunction

TOKENS = torch.tensor([[5, 80, 81, 90, 100, 44, 45, 46], [5, 70, 71, 72, 73, 74, 75, 76]])
MASK = torch.tensor([[1] * 8, [1] * 5 + [0] * 3])


def _adapted(builder, settings, task):
    model, _ = builder()
    handle = apply_lora(model, settings, task)
    randomize_lora(model)
    return model, handle


INPUTS = {"input_ids": TOKENS, "attention_mask": MASK}


CASES = [
    pytest.param(tiny_llama, "causal-lm", "attention+mlp", id="llama"),
    pytest.param(tiny_gpt2, "causal-lm", "attention+mlp", id="gpt2-conv1d"),
    pytest.param(tiny_neox, "causal-lm", "attention", id="gpt-neox"),
    pytest.param(tiny_bert, "classification", "attention", id="bert-classifier"),
]


@pytest.mark.parametrize("builder,task,targets", CASES)
def test_forward_and_gradients_match_peft(builder, task, targets):
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, targets=targets)
    ours, handle = _adapted(builder, settings, task)
    twin = peft_twin(ours, builder()[0], settings, task, handle)
    labels = TOKENS if task == "causal-lm" else torch.tensor([0, 2])

    our_out = ours(**INPUTS, labels=labels)
    peft_out = twin(**INPUTS, labels=labels)
    torch.testing.assert_close(our_out.logits, peft_out.logits, rtol=1e-5, atol=1e-6)

    our_out.loss.backward()
    peft_out.loss.backward()
    peft_grads = {name.replace(".default", "").replace("base_model.model.", "").replace(".modules_to_save", ""): p.grad
                  for name, p in twin.named_parameters() if p.requires_grad}
    our_grads = {name: p.grad for name, p in ours.named_parameters() if p.requires_grad}
    assert set(our_grads) == set(peft_grads)
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, peft_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_lora_output_is_base_plus_scaled_low_rank_update_for_linear_and_conv1d():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 12)
    for base in (nn.Linear(12, 7), Conv1D(7, 12)):
        layer = LoraLinear(base.requires_grad_(False), rank=3, alpha=6, rslora=False)
        nn.init.normal_(layer.lora_B.weight)
        a, b = layer.lora_A.weight, layer.lora_B.weight
        expected = base(x) + 2.0 * (x @ a.T @ b.T)
        torch.testing.assert_close(layer(x), expected)


def test_rslora_scales_by_alpha_over_square_root_of_rank():
    layer = LoraLinear(nn.Linear(8, 8), rank=16, alpha=8, rslora=True)
    assert layer.scaling == pytest.approx(8 / math.sqrt(16))


def test_new_adapter_leaves_the_model_unchanged_and_a_is_kaiming_uniform():
    model, _ = tiny_llama()
    before = model(input_ids=TOKENS).logits
    apply_lora(model, LoraSettings(rank=8, targets="attention"), "causal-lm")
    torch.testing.assert_close(model(input_ids=TOKENS).logits, before)
    for _, module in lora_modules(model):
        bound = 1 / math.sqrt(module.in_features)  # kaiming_uniform(a=sqrt 5) on (r, in) gives U(-1/sqrt(in), ..)
        assert module.lora_A.weight.abs().max() <= bound
        assert module.lora_A.weight.abs().max() > 0.8 * bound
        assert torch.count_nonzero(module.lora_B.weight) == 0


def test_fused_backward_matches_finite_differences_with_and_without_dropout():
    torch.manual_seed(0)
    for base in (nn.Linear(6, 5).double(), Conv1D(5, 6).double()):
        base.requires_grad_(False)
        x = torch.randn(2, 4, 6, dtype=torch.double, requires_grad=True)
        a = torch.randn(3, 6, dtype=torch.double, requires_grad=True)
        b = torch.randn(5, 3, dtype=torch.double, requires_grad=True)
        for p in (0.0, 0.3):
            def layer(x, a, b):
                torch.manual_seed(7)  # the same dropout mask on every evaluation
                return _LoraFunction.apply(x, base.weight, base.bias, a, b, 2.0, p, isinstance(base, Conv1D))

            assert torch.autograd.gradcheck(layer, (x, a, b))


def test_dropout_is_applied_in_training_only():
    torch.manual_seed(0)
    layer = LoraLinear(nn.Linear(16, 16).requires_grad_(False), rank=4, alpha=4, dropout=0.5)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(4, 16)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))


@pytest.mark.parametrize("builder,task,targets", CASES)
def test_merged_model_matches_unmerged_output(builder, task, targets):
    model, _ = _adapted(builder, LoraSettings(rank=4, alpha=8, targets=targets), task)
    model.eval()
    unmerged = model(**INPUTS).logits
    merge_and_unload(model)
    assert not list(lora_modules(model))
    torch.testing.assert_close(model(**INPUTS).logits, unmerged, rtol=1e-5, atol=1e-5)


def test_unmerge_restores_the_base_weight():
    layer = LoraLinear(nn.Linear(8, 6).requires_grad_(False), rank=2, alpha=4)
    nn.init.normal_(layer.lora_B.weight)
    original = layer.base_layer.weight.clone()
    layer.merge()
    assert not torch.allclose(layer.base_layer.weight, original)
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, original)


def test_bf16_merge_rounds_once_from_float32():
    torch.manual_seed(0)
    base = nn.Linear(64, 64).to(torch.bfloat16).requires_grad_(False)
    original = base.weight.float().clone()
    layer = LoraLinear(base, rank=8, alpha=16)
    nn.init.normal_(layer.lora_B.weight, std=1e-3)
    exact = original + layer.delta_weight()
    layer.merge()
    # One rounding of the float32 sum: within half a bf16 ulp (2^-8 relative) of the exact result.
    assert torch.equal(layer.base_layer.weight, exact.to(torch.bfloat16))
    assert layer.lora_A.weight.dtype == torch.float32


def test_bf16_base_runs_with_float32_adapter():
    base = nn.Linear(16, 8).to(torch.bfloat16).requires_grad_(False)
    layer = LoraLinear(base, rank=4, alpha=8)
    nn.init.normal_(layer.lora_B.weight)
    x = torch.randn(2, 16, dtype=torch.bfloat16)
    out = layer(x)
    assert out.dtype == torch.bfloat16
    expected = base(x).float() + 2.0 * (x.float() @ layer.lora_A.weight.T @ layer.lora_B.weight.T)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


def test_dropout_mask_drops_the_asked_fraction_and_is_unbiased_and_seeded():
    from trainer.lora import dropout_mask

    x = torch.ones(512, 512)
    torch.manual_seed(3)
    mask, keep_scale = dropout_mask(x, 0.1)
    torch.manual_seed(3)
    again, _ = dropout_mask(x, 0.1)
    assert torch.equal(mask, again)
    dropped = 1 - mask.float().mean().item()
    assert abs(dropped - 0.1) < 0.003  # 262k draws: the standard error is 0.0006
    assert keep_scale == pytest.approx(1 / 0.9, rel=1e-4)
    assert (x * mask * keep_scale).mean().item() == pytest.approx(1.0, abs=0.004)


@pytest.mark.parametrize("builder,task", [pytest.param(tiny_llama, "causal-lm", id="llama"),
                                          pytest.param(partial(tiny_llama, tie_embeddings=True), "causal-lm",
                                                       id="llama-tied-embeddings"),
                                          pytest.param(tiny_bert, "classification", id="bert-classifier")])
def test_a_training_step_gives_peft_gradients_for_a_b_head_and_input_and_the_same_update(builder, task):
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, targets="attention")
    ours, handle = _adapted(builder, settings, task)
    twin = peft_twin(ours, builder()[0], settings, task, handle)
    labels = TOKENS if task == "causal-lm" else torch.tensor([0, 2])
    results = []
    for model in (ours, twin):
        model.train()
        embeds = model.get_input_embeddings()(TOKENS).detach().requires_grad_(True)
        trainable = {name.replace(".default", "").replace("base_model.model.", "").replace(".modules_to_save", ""): p
                     for name, p in model.named_parameters() if p.requires_grad}
        optimizer = torch.optim.AdamW(list(trainable.values()), lr=1e-2)
        torch.manual_seed(5)  # the base's own dropout (BERT's) draws the same masks in both
        model(inputs_embeds=embeds, attention_mask=MASK, labels=labels).loss.backward()
        grads = {name: p.grad.clone() for name, p in trainable.items()}
        optimizer.step()
        results.append((embeds.grad, grads, {name: p.detach().clone() for name, p in trainable.items()}))
    (our_input, our_grads, our_after), (peft_input, peft_grads, peft_after) = results
    assert any("lora_A" in name for name in our_grads) and any("lora_B" in name for name in our_grads)
    if task == "classification":
        assert {"classifier.weight", "classifier.bias"} <= set(our_grads)
    assert set(our_grads) == set(peft_grads)
    torch.testing.assert_close(our_input, peft_input, rtol=1e-5, atol=1e-7)
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, peft_grads[name], rtol=1e-5, atol=1e-7, msg=name)
        torch.testing.assert_close(our_after[name], peft_after[name], rtol=1e-5, atol=1e-7, msg=name)


def test_fused_dropout_matches_the_textbook_layer_given_the_same_mask():
    from trainer.lora import dropout_mask

    torch.manual_seed(0)
    p, scaling = 0.25, 2.0
    for base in (nn.Linear(12, 7).requires_grad_(False), Conv1D(7, 12).requires_grad_(False)):
        x = torch.randn(3, 5, 12, requires_grad=True)
        a = torch.randn(3, 12, requires_grad=True)
        b = torch.randn(7, 3, requires_grad=True)
        torch.manual_seed(11)
        fused = _LoraFunction.apply(x, base.weight, base.bias, a, b, scaling, p, isinstance(base, Conv1D))
        torch.manual_seed(11)  # the same draw gives the same mask
        mask, keep_scale = dropout_mask(x.detach().reshape(-1, 12), p)
        dropped = x * mask.view(x.shape) * keep_scale
        textbook = base(x) + scaling * (dropped @ a.T @ b.T)
        torch.testing.assert_close(fused, textbook)
        g = torch.randn_like(fused)
        fused_grads = torch.autograd.grad(fused, (x, a, b), g)
        for got, expected in zip(fused_grads, torch.autograd.grad(textbook, (x, a, b), g)):
            torch.testing.assert_close(got, expected)
        assert 0 < mask.float().mean().item() < 1


def test_dropout_changes_training_output_only_and_is_unbiased():
    torch.manual_seed(0)
    base = nn.Linear(16, 8).requires_grad_(False)
    x = torch.randn(4, 16)
    plain = LoraLinear(base, rank=4, alpha=8, dropout=0.0)
    nn.init.normal_(plain.lora_B.weight)
    dropping = LoraLinear(base, rank=4, alpha=8, dropout=0.3)
    dropping.load_state_dict(plain.state_dict())
    exact = base(x) + 2.0 * (x @ plain.lora_A.weight.T @ plain.lora_B.weight.T)

    torch.testing.assert_close(plain.train()(x), exact)  # p = 0: training and eval are the same function
    torch.testing.assert_close(plain.eval()(x), exact)
    torch.testing.assert_close(dropping.eval()(x), exact)
    dropping.train()
    draws = torch.stack([dropping(x) for _ in range(4000)])
    assert not torch.allclose(draws[0], exact)
    # Each output is base + a sum of 16 dropped terms; 4000 draws put the mean within a few 0.01 of exact.
    torch.testing.assert_close(draws.mean(0), exact, rtol=0, atol=0.1)
    assert (draws.std(0) > 0).all()
