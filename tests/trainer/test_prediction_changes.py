"""The held-out rows whose prediction a classification run changed (trainer.prediction_changes), from a real run on
the tiny BERT, checked against PEFT's predictions with the saved adapter and the base eval's confusion matrix."""
import json

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification

from trainer import prediction_changes
from trainer.config import LoraSettings, TrainConfig
from trainer.data.dataset import prepare
from trainer.evaluate import classification_metrics
from trainer.models import load_tokenizer
from trainer.train import train

WORDS = ("refund", "crash", "hello")


def test_the_rows_whose_prediction_changed_agree_with_peft_and_with_the_base_eval(tmp_path, tiny_bert_dir):
    # Lengths vary, so eval batches (sorted by length) hold the rows in another order than the held-out set.
    rows = [{"text": f"{word} {'and so on ' * (i % 4)}{i}", "label": word} for i in range(12) for word in WORDS]
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = TrainConfig(model=str(tiny_bert_dir), data=str(data), out=str(tmp_path / "run"), task="classification",
                         batch_size=4, lr=3e-2, max_steps=30, eval_fraction=0.35, lora=LoraSettings(dropout=0.0))
    metrics = train(config)
    changes = metrics["prediction_changes"]
    names = [metrics["label_mapping"][i] for i in range(len(WORDS))]

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    held_out = prepare(config, tokenizer).eval
    tuned = PeftModel.from_pretrained(AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir),
                                      tmp_path / "run" / "adapter").eval()
    with torch.no_grad():  # one row at a time: no padding, no batching order
        after = [int(tuned(input_ids=torch.tensor([f["input_ids"]])).logits.argmax(-1)) for f in held_out]
    gold = [f["label"] for f in held_out]

    assert changes["compared"] == len(held_out) == metrics["final_eval"]["eval_examples"] == 12
    assert 0 < changes["changed"] == len(changes["rows"]) <= prediction_changes.MAX_ROWS
    before = list(after)
    for row in changes["rows"]:
        i = row["example"]
        assert row["after"] == names[after[i]] and row["label"] == names[gold[i]] and row["before"] != row["after"]
        assert row["text"] == tokenizer.decode(held_out[i]["input_ids"], skip_special_tokens=True)
        assert row["text"].split()[0] == row["label"]  # the text is the row's own (its first word is its label)
        before[i] = names.index(row["before"])
    # Every other row kept its prediction: with the changed rows put back, the predictions are the base eval's.
    assert classification_metrics(before, gold, names)["confusion_matrix"] == metrics["base_eval"]["confusion_matrix"]
    assert classification_metrics(after, gold, names)["confusion_matrix"] == metrics["final_eval"]["confusion_matrix"]
    assert changes["fixed"] == sum(after[r["example"]] == gold[r["example"]] for r in changes["rows"])
    assert changes["broken"] == sum(before[r["example"]] == gold[r["example"]] for r in changes["rows"])
    assert changes["fixed"] > changes["broken"]  # it learned something


def test_only_the_first_rows_are_kept_but_every_change_is_counted():
    class Words:
        def decode(self, ids, skip_special_tokens):
            return " ".join(map(str, ids))

    size = prediction_changes.MAX_ROWS + 10
    features = [{"input_ids": [i, i], "label": 0} for i in range(size)]
    record = prediction_changes.compare([1] * size, [0] * (size - 1) + [2], features, ["a", "b", "c"], Words())
    assert (record["compared"], record["changed"], record["fixed"], record["broken"]) == (size, size, size - 1, 0)
    assert [row["example"] for row in record["rows"]] == list(range(prediction_changes.MAX_ROWS))
    assert record["rows"][3] == {"example": 3, "text": "3 3", "label": "a", "before": "b", "after": "a"}


def test_causal_lm_runs_record_no_prediction_changes(tmp_path, tiny_llama_dir):
    data = tmp_path / "lm.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Say {i}:", "completion": f" {i}"}) + "\n" for i in range(12)))
    metrics = train(TrainConfig(model=str(tiny_llama_dir), data=str(data), out=str(tmp_path / "run"), max_steps=1,
                                batch_size=4, eval_fraction=0.25, sample_answers=False))
    assert metrics["prediction_changes"] is None
