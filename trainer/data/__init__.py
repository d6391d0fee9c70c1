"""Datasets for the engine: read, check, render and batch the rows a person brings.

One module per job, in the order a file travels through them:

- `reader`: stream raw rows out of JSONL / JSON array / CSV files (optionally gzip), one bounded line at a time.
- `formats`: recognise the five formats (text, prompt_completion, alpaca, chat, classification), map columns,
  and turn a raw row into a canonical example or a list of problems.
- `validate`: the report the web page and `python -m trainer validate` show (problems, token lengths,
  histogram, labels, preview). Training runs the same row checks, so what passes validation trains.
- `render`: an example -> token ids with a loss mask (and preview segments).
- `labels`: the stable label <-> id mapping for classification.
- `split`: the deterministic train/eval split.
- `batching`: length-grouped, resumable batch order; packing; padding to tensors.
- `dataset`: `prepare(config, tokenizer)`, the single entry point `trainer.train` uses.

Only `batching` imports torch; everything else is pure Python (plus a tokenizer object when one is given).
"""
