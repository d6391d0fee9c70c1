"""batching: a reproducible length-grouped order, packing that keeps labels, dynamic padding."""
from __future__ import annotations

import random

import pytest
import torch

from trainer.data.batching import batch_order, collate, pack, padding_fraction
from trainer.data.render import IGNORE_INDEX


def features_of_lengths(lengths):
    return [{"input_ids": list(range(1, n + 1)), "labels": [IGNORE_INDEX] + list(range(2, n + 1))} for n in lengths]


_rng = random.Random(3)
LENGTHS = [_rng.randint(1, 200) for _ in range(1000)]
FEATURES = features_of_lengths(LENGTHS)


def test_batch_order_is_a_function_of_seed_and_epoch():
    assert batch_order(FEATURES, 8, seed=1, epoch=2) == batch_order(FEATURES, 8, seed=1, epoch=2)
    assert batch_order(FEATURES, 8, seed=1, epoch=2) != batch_order(FEATURES, 8, seed=1, epoch=3)
    assert batch_order(FEATURES, 8, seed=1, epoch=2) != batch_order(FEATURES, 8, seed=2, epoch=2)


def test_every_example_appears_once_per_epoch_in_batches_of_at_most_batch_size():
    batches = batch_order(FEATURES, 8, seed=0, epoch=0)
    assert sorted(i for batch in batches for i in batch) == list(range(len(FEATURES)))
    assert all(1 <= len(batch) <= 8 for batch in batches)


def test_the_batch_with_the_longest_example_comes_first():
    first = batch_order(FEATURES, 8, seed=0, epoch=0)[0]
    assert max(LENGTHS[i] for i in first) == max(LENGTHS)


def test_length_grouping_pads_far_less_than_random_batches():
    grouped = padding_fraction(FEATURES, batch_order(FEATURES, 8, seed=0, epoch=0))
    order = list(range(len(FEATURES)))
    random.Random(0).shuffle(order)
    shuffled = padding_fraction(FEATURES, [order[i:i + 8] for i in range(0, len(order), 8)])
    assert grouped < 0.05 < shuffled


def test_padding_fraction_counts_pad_positions():
    features = features_of_lengths([2, 4, 4])
    assert padding_fraction(features, [[0, 1], [2]]) == pytest.approx(2 / 12)


def test_collate_pads_right_with_masks_and_ignored_labels():
    batch = collate(features_of_lengths([3, 1]), pad_id=0)
    assert torch.equal(batch["input_ids"], torch.tensor([[1, 2, 3], [1, 0, 0]]))
    assert torch.equal(batch["attention_mask"], torch.tensor([[1, 1, 1], [1, 0, 0]]))
    assert torch.equal(batch["labels"], torch.tensor([[IGNORE_INDEX, 2, 3], [IGNORE_INDEX] * 3]))


def test_collate_classification_gives_one_label_per_row():
    batch = collate([{"input_ids": [5, 6], "label": 2}, {"input_ids": [7], "label": 0}], pad_id=9)
    assert torch.equal(batch["input_ids"], torch.tensor([[5, 6], [7, 9]]))
    assert torch.equal(batch["labels"], torch.tensor([2, 0]))


def test_packing_concatenates_and_cuts_keeping_labels_with_their_tokens():
    features = features_of_lengths([5, 7, 3])
    packed = pack(features, max_length=4)
    all_ids = [t for f in features for t in f["input_ids"]]
    all_labels = [t for f in features for t in f["labels"]]
    assert [t for f in packed for t in f["input_ids"]] == all_ids
    assert [t for f in packed for t in f["labels"]] == all_labels
    assert [len(f["input_ids"]) for f in packed] == [4, 4, 4, 3]
