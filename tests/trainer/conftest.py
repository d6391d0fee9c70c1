"""Shared fixtures for trainer tests: tiny saved models (see tiny_models.py) and the MiniLM folder.

Tests never reach the hub: HF_HUB_OFFLINE is set before transformers is imported.
"""
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
import pytest

import tiny_models


@pytest.fixture(autouse=True)
def seeded_rng():
    """Every test starts from the same torch and Python RNG state, so a test's random inputs (torch.randn, dropout,
    sampling) do not depend on which tests ran before it."""
    import random

    import torch

    random.seed(0)
    torch.manual_seed(0)


def _saved(kind: str, tmp_path_factory) -> Path:
    return tiny_models.save_tiny(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama causal LM with a byte-level tokenizer that has a chat template."""
    return _saved("llama", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    return _saved("gpt2", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_neox_dir(tmp_path_factory) -> Path:
    return _saved("gpt_neox", tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A saved tiny BERT for sequence classification, labels tiny_models.LABELS."""
    return _saved("bert", tmp_path_factory)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return tiny_models.minilm_path()
