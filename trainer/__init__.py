"""Loraworks' LoRA fine-tuning engine: a plain library and the `python -m trainer` CLI.

This package knows nothing of Django, Celery or Redis. Importing it is cheap: heavy modules (torch,
transformers) load only when a submodule that needs them is imported, so pure-Python parts such as
`trainer.estimate` and `trainer.config` can be used by processes that must never load torch.
"""
