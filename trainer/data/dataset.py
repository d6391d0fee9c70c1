"""From data files to training features: the one entry point `trainer.train` uses.

    prepare(config: TrainConfig, tokenizer) -> Prepared(train, eval, label_mapping, stats)

It unpacks as a tuple `train_features, eval_features, label_mapping, stats = prepare(config, tokenizer)`:
- `train`, `eval`: lists of features. Causal LM: {"input_ids": list[int], "labels": list[int]} (same length, -100
  where the loss is masked; EOS included). Classification: {"input_ids": list[int], "label": int}.
  Every feature is at most `config.max_length` tokens and has at least one token that counts toward the loss.
  With `config.packing` (causal LM only) the training features are packed into max_length chunks; eval is not.
- `label_mapping`: the label names in id order (`label_mapping[i]` is id i's label); [] for causal LM.
- `stats`: a JSON-able dict of counts (format, task, rows, skipped rows, truncated rows, split sizes...) and
  `problems`, the first KEPT_PROBLEMS row problems of the training file ({row, field, message}).

Rows are read and checked by exactly the code behind validation (`validate.checked_rows`); rows with problems
are skipped and counted, never fatal. Raises DataError when the file is unreadable (empty, binary, not UTF-8...),
when nothing usable is left, or when the format cannot train `config.task`.
The eval set is `config.eval_data` when given (read in the training file's format; rows whose label is unseen in
training are dropped), else a seeded split of `config.eval_fraction` (stratified by label for classification).
"""
from __future__ import annotations

from typing import NamedTuple

from trainer.errors import DataError
from trainer.data.batching import pack
from trainer.data.labels import LabelMapping
from trainer.data.preference import FORMAT as PREFERENCE_FORMAT, prompt_layout
from trainer.data.reader import RowProblem, open_rows
from trainer.data.render import encode_batch
from trainer.data.split import split_indices
from trainer.data.validate import checked_rows

ENCODE_CHUNK = 1024
KEPT_PROBLEMS = 10


class Prepared(NamedTuple):
    train: list[dict]
    eval: list[dict]
    label_mapping: list[str]
    stats: dict


def load_examples(path, format: str = "auto", column_mapping: dict[str, str] | None = None,
                  task: str | None = None, problems: list | None = None) -> tuple[str, list[dict], int]:
    """(format, canonical examples of the good rows, number of rows skipped for problems). The first
    KEPT_PROBLEMS problems are appended to `problems` as dicts, when a list is given."""
    examples, skipped_rows, last_bad = [], 0, None
    with open_rows(path) as stream:
        fmt, rows = checked_rows(stream, format, task, column_mapping)
        if fmt is None:
            first = next((item for item in rows if isinstance(item, RowProblem)), None)
            raise DataError(f"{path}: no readable rows" + (f" ({first.message})" if first else ""))
        for item in rows:
            if not isinstance(item, RowProblem):
                examples.append(item[1])
            elif item.fatal:
                raise DataError(item.message)
            else:
                if problems is not None and len(problems) < KEPT_PROBLEMS:
                    problems.append(item.to_dict())
                if item.row is None or item.row != last_bad:  # one row's problems arrive together
                    skipped_rows, last_bad = skipped_rows + 1, item.row
    return fmt, examples, skipped_rows


def prepare(config, tokenizer) -> Prepared:
    """Training and eval features for `config` (a trainer.config.TrainConfig), tokenized with `tokenizer`."""
    problems: list[dict] = []
    fmt, examples, skipped = load_examples(config.data, config.format, config.column_mapping, config.task, problems)
    stats = {"format": fmt, "task": config.task, "rows": len(examples) + skipped, "skipped_rows": skipped,
             "problems": problems}
    if fmt == PREFERENCE_FORMAT:  # an SFT run on preference rows learns the chosen answers, in the prompts' layout
        stats["prompt_layout"] = prompt_layout(examples)
    if config.eval_data:
        train_examples = examples
        eval_mapping = config.column_mapping if config.eval_column_mapping is None else config.eval_column_mapping
        _, eval_examples, stats["eval_skipped_rows"] = load_examples(config.eval_data, fmt, eval_mapping)
    else:
        labels = [example["label"] for example in examples] if fmt == "classification" else None
        train_idx, eval_idx = split_indices(len(examples), config.eval_fraction, config.seed, labels)
        train_examples, eval_examples = [examples[i] for i in train_idx], [examples[i] for i in eval_idx]
    label_names: list[str] = []
    label2id = None
    if fmt == "classification":
        mapping = LabelMapping.from_labels(example["label"] for example in train_examples)
        label_names, label2id = list(mapping.labels), mapping.label2id
        kept = [example for example in eval_examples if example["label"] in label2id]
        stats["eval_rows_unseen_label"] = len(eval_examples) - len(kept)
        eval_examples = kept
    train, train_counts = _features(train_examples, fmt, tokenizer, config, label2id, problems)
    evaluation, eval_counts = _features(eval_examples, fmt, tokenizer, config, label2id, problems)
    stats["skipped_rows"] += train_counts["refused"] + eval_counts["refused"]
    if not train:
        raise DataError("no usable training examples are left after validation; run validate to see why")
    stats.update(train_examples=len(train), eval_examples=len(evaluation),
                 truncated_rows=train_counts["truncated"] + eval_counts["truncated"],
                 no_loss_rows=train_counts["no_loss"] + eval_counts["no_loss"], packed=False)
    if config.packing and fmt != "classification":
        train = pack(train, config.max_length)
        stats.update(packed=True, train_packed_sequences=len(train))
    return Prepared(train, evaluation, label_names, stats)


def _features(examples: list[dict], fmt: str, tokenizer, config, label2id, problems: list[dict]
              ) -> tuple[list[dict], dict]:
    """Encoded features in example order, without rows where nothing counts toward the loss or that the model's
    chat template refuses (those are counted and, while there is room, added to `problems`)."""
    features, counts = [], {"truncated": 0, "no_loss": 0, "refused": 0}
    for start in range(0, len(examples), ENCODE_CHUNK):
        for encoded in encode_batch(examples[start:start + ENCODE_CHUNK], fmt, tokenizer,
                                    max_length=config.max_length, train_on_prompt=config.train_on_prompt,
                                    label2id=label2id):
            if encoded.problem is not None:
                counts["refused"] += 1
                if len(problems) < KEPT_PROBLEMS:
                    problems.append({"row": None, "field": "messages", "message": encoded.problem})
                continue
            counts["truncated"] += encoded.full_length > config.max_length
            if encoded.loss_tokens == 0:
                counts["no_loss"] += 1
            else:
                features.append(encoded.feature)
    return features, counts
