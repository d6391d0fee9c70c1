"""The causal-LM loss from hidden states equals transformers' full-logits loss, value and gradients."""
import pytest
import torch

import tiny_models
from trainer import lm_loss
from trainer.config import LoraSettings
from trainer.evaluate import batch_loss_sum
from trainer.inject import apply_lora


# kind -> whether its output layer is its input embedding: GPT-2 ties them by default, and so does the demo LM
# (a Llama), whose loss takes the same hidden-state path.
TIED = {"llama": False, "llama-tied": True, "gpt2": True, "gpt_neox": False}


def _lora_model(kind: str):
    if kind == "llama-tied":
        model, tokenizer = tiny_models.tiny_llama(tie_embeddings=True)
    else:
        model, tokenizer = tiny_models.BUILDERS[kind]()
    tied = model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    assert tied == TIED[kind], f"{kind}: the output layer is {'' if tied else 'not '}the input embedding"
    apply_lora(model, LoraSettings(rank=4, alpha=8, dropout=0.0, targets="all-linear"), "causal-lm")
    tiny_models.randomize_lora(model)  # B != 0, so the update reaches the loss
    return model, tokenizer


def _batch(tokenizer):
    """Two rows of different lengths (right padding), the first with its prompt masked out."""
    encoded = tokenizer(["the quick brown fox jumps over", "hello there"], padding=True, return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    labels[0, :3] = -100
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


def _loss_and_grads(model, loss: torch.Tensor):
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


@pytest.mark.parametrize("kind", list(TIED))
def test_hidden_state_loss_matches_transformers_loss_and_gradients(kind):
    model, tokenizer = _lora_model(kind)
    model.eval()  # no dropout: both passes see the same function
    batch = _batch(tokenizer)
    predicted = int((batch["labels"][:, 1:] != -100).sum())
    assert lm_loss.supports_hidden_state_loss(model)

    ours, our_grads = _loss_and_grads(model, batch_loss_sum(model, batch, "causal-lm", "cpu"))
    # transformers' own loss is the mean over predicted tokens: scale it back to a sum.
    theirs, their_grads = _loss_and_grads(model, model(**batch).loss * predicted)

    assert ours == pytest.approx(theirs, rel=1e-5)
    assert our_grads.keys() == their_grads.keys() and our_grads
    for name, grad in our_grads.items():
        torch.testing.assert_close(grad, their_grads[name], rtol=1e-4, atol=1e-6, msg=name)


def test_logits_are_formed_in_chunks_with_the_same_result(monkeypatch):
    model, tokenizer = _lora_model("llama")
    model.eval()
    batch = _batch(tokenizer)
    whole, whole_grads = _loss_and_grads(model, batch_loss_sum(model, batch, "causal-lm", "cpu"))
    monkeypatch.setattr(lm_loss, "CHUNK_VALUES", model.config.vocab_size * 3)  # three rows a chunk
    chunked, chunked_grads = _loss_and_grads(model, batch_loss_sum(model, batch, "causal-lm", "cpu"))
    assert chunked == pytest.approx(whole, rel=1e-6)
    for name, grad in whole_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, msg=name)


def test_no_gradient_work_is_done_without_grad():
    model, tokenizer = _lora_model("gpt2")
    with torch.no_grad():
        loss = batch_loss_sum(model, _batch(tokenizer), "causal-lm", "cpu")
    assert not loss.requires_grad and torch.isfinite(loss)


def test_models_whose_head_trains_or_is_not_plain_use_full_logits():
    model, _ = _lora_model("llama")
    model.get_output_embeddings().weight.requires_grad_(True)
    assert not lm_loss.supports_hidden_state_loss(model)
    model.get_output_embeddings().weight.requires_grad_(False)
    model.config.model_type = "gemma2"  # soft-caps its logits after the head
    assert not lm_loss.supports_hidden_state_loss(model)
    classifier, _ = tiny_models.tiny_bert()
    assert not lm_loss.supports_hidden_state_loss(classifier)
