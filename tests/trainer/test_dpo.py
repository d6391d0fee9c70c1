"""DPO: our loss equals TRL's on the same batch, model and reference; the reference is the base with the adapter
off; only answer positions reach the output layer; a run raises held-out preference accuracy; the CLI writes it."""
import json

import pytest
import torch

import tiny_models
from trainer import cli, dpo, lm_loss
from trainer.config import LoraSettings, TrainConfig
from trainer.dpo import pair_features
from trainer.inject import apply_lora
from trainer.train import train

BETA = 0.1
# The preferred style: lower case. Training and held-out pairs are different sentences, written apart.
TRAIN = [("Name a colour", "it is blue"), ("Pick a fruit", "maybe a pear"), ("Say a number", "seven"),
         ("Greet me", "hello there"), ("Name an animal", "a small cat"), ("Describe rain", "wet and cold"),
         ("Name a city", "paris"), ("What is ice", "frozen water"), ("Pick a tool", "a hammer"),
         ("Name a tree", "an oak"), ("Say goodbye", "see you soon"), ("Name a drink", "green tea")]
HELD_OUT = [("Tell me a metal", "copper is one"), ("Where do fish live", "in the sea"), ("A word for happy", "glad"),
            ("Name a planet", "mars")]


def _rows(items):
    return [{"prompt": f"{prompt}:", "chosen": f" {answer}", "rejected": f" {answer.upper()}"}
            for prompt, answer in items]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _lora_llama():
    model, tokenizer = tiny_models.tiny_llama()
    settings = LoraSettings(rank=4, alpha=8, dropout=0.0, targets="all-linear")
    handle = apply_lora(model, settings, "causal-lm")
    tiny_models.randomize_lora(model)  # B != 0: the policy differs from the reference
    return model, tokenizer, settings, handle


def _pairs(tokenizer):
    examples = [{"prompt": "Say hi:", "chosen": " Hello, friend!", "rejected": " no"},
                {"messages": [{"role": "user", "content": "Colour?"}], "chosen": "Blue, I think.", "rejected": "Red"},
                {"prompt": "2+2=", "chosen": " 4", "rejected": " five, or so"}]
    return pair_features(examples, tokenizer, max_length=64)[0]


def _trl_rows(pairs):
    """TRL's tokenized rows (prompt_ids, chosen_ids, rejected_ids) cut from our features at the first label."""
    def cut(feature):
        start = next(i for i, label in enumerate(feature["labels"]) if label != -100)
        return feature["input_ids"][:start], feature["input_ids"][start:]
    rows = []
    for pair in pairs:
        (prompt, chosen), (prompt_again, rejected) = cut(pair["chosen"]), cut(pair["rejected"])
        assert prompt == prompt_again
        rows.append({"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected})
    return rows


@pytest.mark.parametrize("rpo_alpha", [0.0, 0.7])
def test_dpo_loss_and_gradients_equal_trls_on_the_same_batch_model_and_reference(tmp_path, rpo_alpha):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    model, tokenizer, settings, handle = _lora_llama()
    twin = tiny_models.peft_twin(model, tiny_models.tiny_llama()[0], settings, "causal-lm", handle)
    # TRL's former `rpo_alpha` is now the "sft" loss weighted beside "sigmoid".
    losses = {"loss_type": ["sigmoid", "sft"], "loss_weights": [1.0, rpo_alpha]} if rpo_alpha else {}
    trl = DPOTrainer(model=twin, args=DPOConfig(output_dir=str(tmp_path), beta=BETA, report_to="none", use_cpu=True,
                                                **losses),
                     train_dataset=Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}]),
                     processing_class=tokenizer)
    # TRL keeps a copy of a given adapter as its reference; without it, its reference is the adapter disabled.
    twin.delete_adapter("ref")
    pairs = _pairs(tokenizer)
    inputs = trl.data_collator(_trl_rows(pairs))
    batch = dpo.collate_pairs(pairs, tokenizer.pad_token_id)
    assert torch.equal(batch["input_ids"], inputs["input_ids"])
    assert torch.equal(batch["labels"] != -100, inputs["completion_mask"].bool())

    theirs = trl.compute_loss(twin, inputs)
    theirs.backward()
    policy, reference = dpo.pair_log_probs(model, batch, "cpu")
    loss_sum, sums = dpo.pair_sums(policy, reference, BETA, rpo_alpha, dpo.chosen_tokens(batch))
    ours = loss_sum / len(pairs)
    ours.backward()
    assert abs(ours.item() - theirs.item()) < 1e-5
    dpo_only = dpo.pair_sums(policy.detach(), reference, BETA)[0].item() / len(pairs)
    assert abs(dpo_only - 0.693147) > 0.005  # the policy really differs from the reference
    # The SFT term: rpo_alpha times the mean NLL per chosen answer token, the tokens counted here independently.
    tokens = sum(sum(label != -100 for label in pair["chosen"]["labels"]) for pair in pairs)
    nll = -policy.detach().chunk(2)[0].sum().item() / tokens
    assert abs(ours.item() - (dpo_only + rpo_alpha * nll)) < 1e-5 and nll > 0.1
    their_grads = {name.replace("base_model.model.", "").replace(".default", ""): p.grad
                   for name, p in twin.named_parameters() if p.requires_grad}
    for name, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(p.grad, their_grads[name], atol=1e-5, rtol=1e-4)


def test_the_reference_is_the_base_model_with_the_adapter_switched_off():
    model, tokenizer, *_ = _lora_llama()
    base, _ = tiny_models.tiny_llama()
    ids = torch.tensor([tokenizer("the quick brown fox")["input_ids"]])
    with dpo.adapter_disabled(model):
        off = model(input_ids=ids).logits
    assert torch.equal(off, base(input_ids=ids).logits)
    assert not torch.allclose(model(input_ids=ids).logits, off)  # and the adapter is back afterwards


def test_only_answer_tokens_go_through_the_output_layer(monkeypatch):
    model, tokenizer, *_ = _lora_llama()
    pairs = _pairs(tokenizer)
    batch = dpo.collate_pairs(pairs, tokenizer.pad_token_id)
    rows_through_head = []
    real_linear = lm_loss.F.linear

    def counting_linear(hidden, weight, bias=None):
        if weight is model.get_output_embeddings().weight:
            rows_through_head.append(hidden.shape[0])
        return real_linear(hidden, weight, bias)

    monkeypatch.setattr(lm_loss.F, "linear", counting_linear)
    hook = model.get_output_embeddings().register_forward_hook(lambda *_: _fail("full logits were formed"))
    logps = dpo.sequence_log_probs(model, batch, "cpu")
    hook.remove()
    answer_tokens = int((batch["labels"][:, 1:] != -100).sum())
    assert sum(rows_through_head) == answer_tokens < int(batch["attention_mask"].sum()) - len(batch["labels"])
    # and they are the log-probabilities the full logits give
    monkeypatch.setattr(lm_loss.F, "linear", real_linear)
    logits = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                               .float(), -1)
    labels = batch["labels"][:, 1:]
    expected = (logits[:, :-1].gather(2, labels.clamp(min=0)[..., None])[..., 0] * (labels != -100)).sum(1)
    torch.testing.assert_close(logps, expected, atol=1e-4, rtol=1e-5)


def _fail(message):
    raise AssertionError(message)


def test_a_dpo_run_raises_held_out_preference_accuracy(tmp_path, tiny_llama_dir):
    config = TrainConfig(model=str(tiny_llama_dir), data=str(_jsonl(tmp_path / "train.jsonl", _rows(TRAIN) * 2)),
                         eval_data=str(_jsonl(tmp_path / "eval.jsonl", _rows(HELD_OUT))), out=str(tmp_path / "run"),
                         method="dpo", batch_size=4, lr=3e-2, max_steps=8,
                         lora=LoraSettings(rank=8, dropout=0.0, targets="attention+mlp"))
    metrics = train(config)
    base, final = metrics["base_eval"], metrics["final_eval"]
    assert base["reward_margin"] == 0 and abs(base["eval_loss"] - 0.693147) < 1e-5  # π = π_ref before training
    assert base["preference_accuracy"] <= 0.5 and final["preference_accuracy"] == 1.0
    assert final["reward_margin"] > 0.1 and final["eval_loss"] < base["eval_loss"] - 0.05
    steps = metrics["history"]
    assert [entry["step"] for entry in steps] == list(range(1, 9))
    assert set(dpo.STEP_KEYS) <= set(steps[-1]) and steps[-1]["reward_accuracy"] > 0.5
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


def test_cli_train_method_dpo_writes_the_sft_metrics_shape_plus_preference_accuracy(tmp_path, tiny_llama_dir,
                                                                                   capsys):
    data = _jsonl(tmp_path / "prefs.jsonl", _rows(TRAIN))
    sft_rows = [{"prompt": row["prompt"], "completion": row["chosen"]} for row in _rows(TRAIN)]
    sft_data = _jsonl(tmp_path / "sft.jsonl", sft_rows)
    common = ["--model", tiny_llama_dir, "--max-steps", "2", "--batch-size", "4", "--eval-fraction", "0.25"]
    shapes = {}
    for method, path in (("dpo", data), ("sft", sft_data)):
        out = tmp_path / method
        # In process (a subprocess would spend seconds importing torch); main() is what `python -m trainer` runs.
        extra = ["--rpo-alpha", "0.5"] if method == "dpo" else []
        assert cli.main(["train", "--method", method, "--data", str(path), "--out", str(out),
                         *map(str, common), *extra]) == 0
        shapes[method] = json.loads((out / "metrics.json").read_text())
        assert json.loads(capsys.readouterr().out) == shapes[method]
    dpo_metrics = shapes["dpo"]
    assert set(dpo_metrics) == set(shapes["sft"])
    assert 0 <= dpo_metrics["base_eval"]["preference_accuracy"] <= 1
    assert 0 <= dpo_metrics["final_eval"]["preference_accuracy"] <= 1
    assert dpo_metrics["config"]["method"] == "dpo" and dpo_metrics["config"]["beta"] == 0.1
    assert dpo_metrics["config"]["rpo_alpha"] == 0.5


def test_a_dpo_run_continues_from_a_saved_sft_adapter(tmp_path, tiny_llama_dir):
    sft_data = _jsonl(tmp_path / "sft.jsonl", [{"prompt": row["prompt"], "completion": row["chosen"]}
                                               for row in _rows(TRAIN)])
    held_out = str(_jsonl(tmp_path / "eval.jsonl", _rows(HELD_OUT)))
    sft = train(TrainConfig(model=str(tiny_llama_dir), data=str(sft_data), out=str(tmp_path / "sft"), max_steps=3,
                            batch_size=4, lr=3e-2, eval_fraction=0.0, lora=LoraSettings(rank=4, dropout=0.0)))
    assert sft["steps"] == 3
    config = TrainConfig(model=str(tiny_llama_dir), data=str(_jsonl(tmp_path / "p.jsonl", _rows(TRAIN))),
                         eval_data=held_out, out=str(tmp_path / "dpo"), method="dpo", batch_size=4, lr=3e-2,
                         max_steps=2, init_adapter=str(tmp_path / "sft" / "adapter"),
                         lora=LoraSettings(rank=16, dropout=0.0))
    metrics = train(config)
    # It starts from the SFT adapter (so, against the adapter-off base reference, the margin is not 0 at step 0)
    # and takes its LoRA shape.
    assert metrics["base_eval"]["reward_margin"] != 0 and metrics["config"]["lora"]["rank"] == 4
    assert metrics["config"]["init_adapter"] == str(tmp_path / "sft" / "adapter")


def test_the_runs_data_statistics_say_whether_the_prompts_are_chat_turns(tmp_path):
    from trainer.data.dataset import prepare

    _, tokenizer = tiny_models.tiny_llama()
    plain = [{"prompt": f"Say {i}:", "chosen": f" {i}, friend!", "rejected": " no"} for i in range(10)]
    chat = [{"messages": [{"role": "user", "content": f"Say {i}"}], "chosen": f"{i}, friend!", "rejected": "no"}
            for i in range(10)]
    for rows, layout in ((plain, "text"), (chat, "chat")):
        data = str(_jsonl(tmp_path / f"{layout}.jsonl", rows))
        for method in ("dpo", "sft"):  # an SFT run on preference rows learns the chosen answers in the same layout
            config = TrainConfig(model="unused", data=data, out=str(tmp_path / "run"), method=method)
            stats = dpo.prepare_pairs(config, tokenizer)[2] if method == "dpo" else prepare(config, tokenizer).stats
            assert (stats["format"], stats["prompt_layout"]) == ("preference", layout), method
