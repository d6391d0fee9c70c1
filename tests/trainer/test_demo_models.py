"""The demo causal LM: built reproducibly, loadable by transformers alone, labelled as a demo, chat-ready."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trainer import demo_models
from trainer.demo_models import DemoSpec, build_tiny_lm, ensure_tiny_lm

# A few seconds to build: same recipe, toy sizes.
TOY = DemoSpec(vocab_size=300, hidden_size=32, layers=2, heads=2, intermediate_size=64, seq_len=32,
               batch_size=4, steps=6, text_chars=20_000)


@pytest.fixture(scope="module")
def toy_lm(tmp_path_factory) -> Path:
    return build_tiny_lm(tmp_path_factory.mktemp("toy") / "lm", TOY)


def test_toy_build_loads_with_transformers_alone_and_generates(toy_lm):
    model = AutoModelForCausalLM.from_pretrained(toy_lm)
    tokenizer = AutoTokenizer.from_pretrained(toy_lm)
    ids = tokenizer("The for statement", return_tensors="pt")["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    assert tokenizer.decode(tokenizer("print(x) — naïve")["input_ids"]) == "print(x) — naïve"  # byte-level


def test_config_and_readme_label_it_a_demo(toy_lm):
    config = json.loads((toy_lm / "config.json").read_text())
    assert config["loraworks_demo"] is True and "demo model" in config["demo_note"]
    assert "demo model" in (toy_lm / "README.md").read_text()
    build = json.loads((toy_lm / "demo_build.json").read_text())
    assert build["steps"] == TOY.steps and build["recipe_version"] == demo_models.RECIPE_VERSION


def test_the_demo_recipe_makes_a_model_of_about_one_million_parameters():
    # The README's "~1M-parameter" demo LM: the full recipe's shapes, with a vocabulary as large as it asks for.
    class FullVocabulary:
        eos_token_id = pad_token_id = 0

        def __len__(self):
            return DemoSpec().vocab_size

    count = demo_models.build_model(DemoSpec(), FullVocabulary()).num_parameters()
    assert count == 1_066_112  # 2048 x 128 tied embeddings + 4 layers of 128-wide attention and 352-wide MLP


def test_build_is_reproducible(toy_lm, tmp_path):
    again = build_tiny_lm(tmp_path / "again", TOY)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (toy_lm / name).read_bytes(), name


def test_pretraining_lowers_the_loss_on_its_corpus(toy_lm, tmp_path):
    untrained = build_tiny_lm(tmp_path / "untrained", DemoSpec(**{**TOY.__dict__, "steps": 1}))
    assert json.loads((toy_lm / "demo_build.json").read_text())["final_train_loss"] \
        < json.loads((untrained / "demo_build.json").read_text())["final_train_loss"]


def test_chat_template_marks_exactly_the_assistant_turn(toy_lm):
    tokenizer = AutoTokenizer.from_pretrained(toy_lm)
    messages = [{"role": "user", "content": "What is a list?"}, {"role": "assistant", "content": "A sequence."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|user|>\nWhat is a list?<|end|>\n<|assistant|>\nA sequence.<|end|>\n"
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    assistant_ids = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"]) if m]
    assert tokenizer.decode(assistant_ids) == "A sequence.<|end|>"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|assistant|>\n")


def test_eos_ends_generation_by_default(toy_lm):
    model = AutoModelForCausalLM.from_pretrained(toy_lm)
    tokenizer = AutoTokenizer.from_pretrained(toy_lm)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|end|>")


def test_cache_builds_once_and_reuses_the_folder(monkeypatch, tmp_path, toy_lm):
    builds = []

    def fake_build(out_dir, spec, log=None):
        builds.append(spec)
        return Path(shutil.copytree(toy_lm, out_dir))

    monkeypatch.setattr(demo_models, "build_tiny_lm", fake_build)
    first = ensure_tiny_lm(tmp_path / "cache")
    second = ensure_tiny_lm(tmp_path / "cache")
    assert first == second == tmp_path / "cache" / f"tiny-lm-v{demo_models.RECIPE_VERSION}"
    assert len(builds) == 1 and (first / "model.safetensors").is_file()
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".build-")] == []


@pytest.mark.slow
def test_full_build_from_the_command_line_is_small_fast_and_writes_english_like_text(demo_lm_build):
    from trainer.inference import generate
    from trainer.models import load_model

    folder, _, cpu_s = demo_lm_build
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 10 * 1024 * 1024
    # CPU seconds, not wall time, so a busy test machine does not fail it. The build runs on one thread and takes
    # about 46 CPU seconds with the interpreter's start (./run.sh has the model within a minute of starting).
    assert cpu_s < 120
    build = json.loads((folder / "demo_build.json").read_text())
    model, tokenizer = load_model(str(folder), "causal-lm")
    # It learned more than word frequencies: its loss is well below the corpus's unigram entropy, counted here.
    ids = torch.tensor(tokenizer(demo_models.corpus_text())["input_ids"])
    frequencies = torch.bincount(ids).double()
    frequencies = frequencies[frequencies > 0] / frequencies.sum()
    unigram_entropy = float(-(frequencies * frequencies.log()).sum())  # about 6.3 nats
    assert build["final_train_loss"] < unigram_entropy - 1.0
    text = " ".join(generate(model, tokenizer, "The value of", temperature=0.7, max_new_tokens=60, seed=seed)
                    for seed in range(4))
    words = text.split()
    common = {"the", "a", "is", "of", "to", "and", "in", "be", "an", "if", "for", "that", "are"}
    assert len(words) >= 20 and sum(w.lower().strip(".,") in common for w in words) >= 5
