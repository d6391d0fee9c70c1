import math

import pytest
import torch

import tiny_models
from trainer.evaluate import classification_metrics, evaluate, loss_sum, target_count


def test_classification_metrics_match_a_hand_computation():
    # true:  a a a b b c ; predicted: a a b b c c
    labels = [0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 1, 2, 2]
    metrics = classification_metrics(predictions, labels, ["a", "b", "c"])
    assert metrics["accuracy"] == pytest.approx(4 / 6)
    # F1 per class: a: P=2/2 R=2/3 -> 0.8 ; b: P=1/2 R=1/2 -> 0.5 ; c: P=1/2 R=1/1 -> 2/3
    assert metrics["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert metrics["confusion_matrix"] == {"labels": ["a", "b", "c"],
                                           "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}


def test_macro_f1_ignores_classes_absent_from_labels_and_predictions():
    metrics = classification_metrics([0, 1], [0, 1], ["a", "b", "never"])
    assert metrics["macro_f1"] == 1.0
    assert metrics["confusion_matrix"]["matrix"][2] == [0, 0, 0]


def test_causal_loss_counts_only_labelled_next_tokens():
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[-100, 1, 2, -100], [-100, -100, 3, 4]])
    batch = {"labels": labels}
    assert target_count(batch, "causal-lm") == 4
    # position t predicts label t+1
    expected = sum(-torch.log_softmax(logits[b, t - 1], -1)[labels[b, t]]
                   for b, t in [(0, 1), (0, 2), (1, 2), (1, 3)])
    assert loss_sum(logits, labels, "causal-lm").item() == pytest.approx(expected.item(), rel=1e-5)


def _causal_batch(tokenizer, texts):
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


def test_causal_eval_loss_is_token_weighted_mean_and_perplexity_its_exp():
    model, tokenizer = tiny_models.tiny_llama()
    batches = [_causal_batch(tokenizer, ["hello there", "a longer sentence here"]),
               _causal_batch(tokenizer, ["x y"])]
    metrics = evaluate(model, batches, "causal-lm")
    # transformers' own loss is a per-batch mean; reweight each batch by its predicted-token count.
    sums, counts = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = int((batch["labels"][:, 1:] != -100).sum())
            sums += model(**batch).loss.item() * n
            counts += n
    assert metrics["eval_tokens"] == counts
    assert metrics["eval_loss"] == pytest.approx(sums / counts, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(sums / counts), rel=1e-5)


def test_classification_eval_reports_loss_accuracy_and_matrix_against_the_model_itself():
    model, tokenizer = tiny_models.tiny_bert()
    encoded = tokenizer(["refund please", "app crashes", "hello", "charged twice"], padding=True,
                        return_tensors="pt")
    batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"],
             "labels": torch.tensor([0, 1, 2, 0])}
    model.train()  # evaluate must switch dropout off and restore the mode
    metrics = evaluate(model, [batch], "classification", label_names=tiny_models.LABELS)
    assert model.training
    model.eval()
    with torch.no_grad():
        output = model(**batch)
    predicted = output.logits.argmax(-1)
    assert metrics["eval_loss"] == pytest.approx(output.loss.item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((predicted == batch["labels"]).float().mean().item())
    assert sum(map(sum, metrics["confusion_matrix"]["matrix"])) == 4
    assert metrics["eval_examples"] == 4
