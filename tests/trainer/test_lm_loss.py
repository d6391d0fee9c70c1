"""The causal-LM loss from hidden states: chunking, no-grad use, and which models fall back to full logits.

Its equality with transformers' own loss, value and gradients, is checked per architecture in
test_architectures.py."""
import pytest
import torch

import tiny_models
from trainer import lm_loss
from trainer.config import LoraSettings
from trainer.evaluate import batch_loss_sum
from trainer.inject import apply_lora


def _lora_model(kind: str):
    model, tokenizer = tiny_models.BUILDERS[kind]()
    apply_lora(model, LoraSettings(rank=4, alpha=8, dropout=0.0, targets="all-linear"), "causal-lm")
    tiny_models.randomize_lora(model)  # B != 0, so the update reaches the loss
    return model, tokenizer


def test_logits_are_formed_in_chunks_with_the_same_result(monkeypatch):
    model, tokenizer = _lora_model("llama")
    model.eval()
    batch = tiny_models.lm_batch(tokenizer)
    whole, whole_grads = tiny_models.loss_and_grads(model, batch_loss_sum(model, batch, "causal-lm", "cpu"))
    monkeypatch.setattr(lm_loss, "CHUNK_VALUES", model.config.vocab_size * 3)  # three rows a chunk
    chunked, chunked_grads = tiny_models.loss_and_grads(model, batch_loss_sum(model, batch, "causal-lm", "cpu"))
    assert chunked == pytest.approx(whole, rel=1e-6)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, msg=name)


def test_no_gradient_work_is_done_without_grad():
    model, tokenizer = _lora_model("gpt2")
    with torch.no_grad():
        loss = batch_loss_sum(model, tiny_models.lm_batch(tokenizer), "causal-lm", "cpu")
    assert not loss.requires_grad and torch.isfinite(loss)


def test_models_whose_head_trains_or_is_not_plain_use_full_logits():
    model, _ = _lora_model("llama")
    model.get_output_embeddings().weight.requires_grad_(True)
    assert not lm_loss.supports_hidden_state_loss(model)
    model.get_output_embeddings().weight.requires_grad_(False)
    model.config.model_type = "cohere"  # scales its logits after the head
    assert not lm_loss.supports_hidden_state_loss(model)
    classifier, _ = tiny_models.tiny_bert()
    assert not lm_loss.supports_hidden_state_loss(classifier)
