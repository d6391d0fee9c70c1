"""prepare(): the features train.py consumes, the split, and the label mapping."""
from __future__ import annotations

import pytest

from data_helpers import chat, write_jsonl
from tiny_models import tiny_tokenizer
from trainer.config import TrainConfig
from trainer.data.dataset import load_examples, prepare
from trainer.data.labels import LabelMapping
from trainer.data.render import IGNORE_INDEX
from trainer.data.split import split_indices
from trainer.errors import DataError

TOKENIZER = tiny_tokenizer()


def config(data, **settings) -> TrainConfig:
    return TrainConfig(model="unused", data=str(data), out="unused", **settings)


def tickets(count: int, labels=("billing", "bug", "other")) -> list[dict]:
    return [{"text": f"ticket number {i}", "label": labels[i % len(labels)]} for i in range(count)]


def test_prepare_causal_gives_masked_features_and_a_seeded_split(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(50)] + [{"prompt": "broken"}]
    path = write_jsonl(tmp_path / "pc.jsonl", rows)
    train, evaluation, labels, stats = prepare(config(path, eval_fraction=0.2, seed=3), TOKENIZER)
    assert (len(train), len(evaluation), labels) == (40, 10, [])
    assert stats["skipped_rows"] == 1 and stats["format"] == "prompt_completion"
    for feature in train + evaluation:
        assert len(feature["input_ids"]) == len(feature["labels"])
        assert feature["labels"][-1] == TOKENIZER.eos_token_id and feature["labels"][0] == IGNORE_INDEX
    again = prepare(config(path, eval_fraction=0.2, seed=3), TOKENIZER)
    other = prepare(config(path, eval_fraction=0.2, seed=4), TOKENIZER)
    assert again.eval == evaluation and other.eval != evaluation


def test_prepare_classification_maps_sorted_labels_and_stratifies(tmp_path):
    path = write_jsonl(tmp_path / "cls.jsonl", tickets(30))
    prepared = prepare(config(path, task="classification", eval_fraction=0.2), TOKENIZER)
    assert prepared.label_mapping == ["billing", "bug", "other"]
    assert sorted(f["label"] for f in prepared.eval) == [0, 0, 1, 1, 2, 2]
    assert all(set(f) == {"input_ids", "label"} for f in prepared.train)


def test_eval_file_rows_with_unseen_labels_are_dropped_and_counted(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", tickets(12, ("a", "b")))
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"text": "x", "label": "a"}, {"text": "y", "label": "z"}])
    prepared = prepare(config(train, task="classification", eval_data=str(evaluation)), TOKENIZER)
    assert [f["label"] for f in prepared.eval] == [0]
    assert prepared.stats["eval_rows_unseen_label"] == 1 and len(prepared.train) == 12


def test_a_separate_eval_file_is_read_with_its_own_column_mapping(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl",
                        [{"body": t["text"], "category": t["label"]} for t in tickets(12, ("a", "b"))])
    evaluation = write_jsonl(tmp_path / "eval.jsonl", [{"message": "x", "tag": "b"}, {"message": "y", "tag": "a"},
                                                       {"message": "z", "tag": "b"}])
    settings = {"task": "classification", "eval_data": str(evaluation),
                "column_mapping": {"text": "body", "label": "category"}}
    prepared = prepare(config(train, **settings, eval_column_mapping={"text": "message", "label": "tag"}),
                       TOKENIZER)
    assert prepared.label_mapping == ["a", "b"] and len(prepared.train) == 12
    assert [f["label"] for f in prepared.eval] == [1, 0, 1]
    assert [f["input_ids"] for f in prepared.eval] == [
        TOKENIZER(text, truncation=True, max_length=512)["input_ids"] for text in ("x", "y", "z")]
    with_the_training_mapping = prepare(config(train, **settings), TOKENIZER)  # no "body" column there
    assert with_the_training_mapping.eval == [] and with_the_training_mapping.stats["eval_skipped_rows"] == 3


def test_chat_features_count_only_assistant_tokens(tmp_path):
    rows = [chat(("user", f"hi {i}"), ("assistant", "hello")) for i in range(4)]
    prepared = prepare(config(write_jsonl(tmp_path / "chat.jsonl", rows), eval_fraction=0), TOKENIZER)
    expected = TOKENIZER("hello</s>\n", add_special_tokens=False)["input_ids"]
    assert all([t for t in f["labels"] if t != IGNORE_INDEX] == expected for f in prepared.train)


def test_packing_fills_max_length_chunks(tmp_path):
    rows = [{"text": "w" * 20} for _ in range(10)]  # 21 tokens each with EOS: 210 tokens
    prepared = prepare(config(write_jsonl(tmp_path / "t.jsonl", rows), eval_fraction=0, packing=True,
                              max_length=64), TOKENIZER)
    assert [len(f["input_ids"]) for f in prepared.train] == [64, 64, 64, 18]
    assert prepared.stats["packed"]


def test_rows_whose_prompt_fills_max_length_are_dropped(tmp_path):
    rows = [{"prompt": "p" * 40, "completion": "c"}, {"prompt": "p", "completion": "c"}]
    prepared = prepare(config(write_jsonl(tmp_path / "long.jsonl", rows), eval_fraction=0, max_length=16),
                       TOKENIZER)
    assert len(prepared.train) == 1 and prepared.stats["no_loss_rows"] == 1


def test_an_unreadable_file_raises_a_clear_data_error(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match="the file is empty"):
        prepare(config(path), TOKENIZER)


def test_a_file_with_no_usable_rows_raises(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a"}, {"prompt": "p" * 40, "completion": "c"}])
    with pytest.raises(DataError, match="no usable training examples"):
        prepare(config(path, max_length=16), TOKENIZER)


def test_load_examples_returns_canonical_examples_and_the_skip_count(tmp_path):
    rows = [{"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, {"x": 1}]
    fmt, examples, skipped = load_examples(write_jsonl(tmp_path / "sg.jsonl", rows))
    assert fmt == "chat" and skipped == 1
    assert examples == [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}]


def test_label_mapping_round_trips_through_json(tmp_path):
    mapping = LabelMapping.from_labels(["bug", "billing", "bug", "other"])
    mapping.save(tmp_path / "labels.json")
    loaded = LabelMapping.load(tmp_path / "labels.json")
    assert loaded == mapping and loaded.id2label == {0: "billing", 1: "bug", 2: "other"}
    assert LabelMapping.from_dict({"0": "x", "1": "y"}).label2id == {"x": 0, "y": 1}


def test_numeric_labels_sort_as_numbers():
    assert LabelMapping.from_labels(["10", "2", "1"]).labels == ("1", "2", "10")


def test_split_is_deterministic_disjoint_and_sized_by_fraction():
    train, evaluation = split_indices(100, 0.1, seed=7)
    assert (train, evaluation) == split_indices(100, 0.1, seed=7)
    assert len(evaluation) == 10 and sorted(train + evaluation) == list(range(100))


def test_stratified_split_keeps_every_label_in_training():
    labels = ["a"] * 20 + ["b"] * 20 + ["rare"]
    train, evaluation = split_indices(len(labels), 0.25, seed=0, labels=labels)
    assert [labels[i] for i in evaluation].count("a") == 5 and 40 in train
