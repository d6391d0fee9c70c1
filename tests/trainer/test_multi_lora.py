"""Many adapters on one base, chosen per batch row (trainer.multi_lora) and batched generation over them
(trainer.batch_generation): each row must compute what its adapter alone computes, by our engine and by PEFT."""
import pytest
import torch

import tiny_models
from trainer.adapter_io import save_adapter
from trainer.batch_generation import Row, TextStream, generate_rows, left_padded
from trainer.config import LoraSettings
from trainer.errors import TrainerError
from trainer.inference import _eos_ids, generate, load_for_inference
from trainer.inject import apply_lora
from trainer.models import load_model
from trainer.multi_lora import AdapterSet, MultiLoraLinear

# Different ranks, targets and scalings, so a row that took another row's update would show it.
ADAPTERS = {
    "a": (LoraSettings(rank=4, alpha=8, dropout=0.0, targets="attention"), 1),
    "b": (LoraSettings(rank=2, alpha=16, dropout=0.0, targets="all-linear"), 2),
    "c": (LoraSettings(rank=8, alpha=8, dropout=0.0, targets="attention", rslora=True), 3),
}
PROMPTS = ["Hello there, how are", "Hi", "The quick brown fox jumps", "abc", "Hello there, how are"]
ROW_ADAPTERS = ["a", None, "b", "c", "b"]


def _save_adapters(kind: str, base_dir, folder) -> dict:
    out = {}
    for name, (settings, seed) in ADAPTERS.items():
        model, _ = load_model(str(base_dir), "causal-lm")
        handle = apply_lora(model, settings, "causal-lm")
        tiny_models.randomize_lora(model, seed=seed)
        out[name] = save_adapter(model, folder / name, base_model_name_or_path=str(base_dir), task="causal-lm",
                                 settings=settings, target_modules=handle.target_modules, modules_to_save=[])
    return out


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def served(request, tmp_path_factory):
    """(base folder, {name: adapter folder}, base model with every adapter in an AdapterSet, tokenizer)."""
    folder = tmp_path_factory.mktemp(f"multi-{request.param}")
    base_dir = tiny_models.save_tiny(request.param, folder / "base")
    adapters = _save_adapters(request.param, base_dir, folder)
    model, tokenizer = load_model(str(base_dir), "causal-lm")
    model.eval()
    adapter_set = AdapterSet(model)
    for name, path in adapters.items():
        adapter_set.add(name, path)
    return base_dir, adapters, model, adapter_set, tokenizer


def _alone_logits(model, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0]


def test_a_mixed_adapter_batch_gives_each_row_the_logits_of_its_adapter_alone_and_of_peft(served):
    from peft import PeftModel

    base_dir, adapters, model, adapter_set, tokenizer = served
    token_ids = [tokenizer(p)["input_ids"] for p in PROMPTS]
    rows = [Row(ids=ids) for ids in token_ids]
    ids, mask, positions = left_padded(rows, tokenizer.pad_token_id, "cpu")
    with torch.no_grad(), adapter_set.rows(ROW_ADAPTERS):
        batch_logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
    plain = load_model(str(base_dir), "causal-lm")[0].eval()
    for row, (name, prompt_ids) in enumerate(zip(ROW_ADAPTERS, token_ids)):
        mine = batch_logits[row, ids.shape[1] - len(prompt_ids):]
        base_alone = _alone_logits(plain, prompt_ids)
        if name is None:
            torch.testing.assert_close(mine, base_alone, atol=1e-5, rtol=0)
            continue
        assert (mine - base_alone).abs().max() > 1e-2  # the adapter really changes this row
        ours, _ = load_for_inference(str(base_dir), adapter_dir=adapters[name])
        torch.testing.assert_close(mine, _alone_logits(ours, prompt_ids), atol=1e-5, rtol=0)
        fresh, _ = load_model(str(base_dir), "causal-lm")
        peft_model = PeftModel.from_pretrained(fresh, str(adapters[name])).eval()
        torch.testing.assert_close(mine, _alone_logits(peft_model, prompt_ids), atol=1e-5, rtol=0)


def test_rows_outside_a_routing_block_and_rows_without_adapter_get_the_base_exactly(served):
    base_dir, _, model, adapter_set, tokenizer = served
    plain, _ = load_model(str(base_dir), "causal-lm")
    prompt = tokenizer("Hello there")["input_ids"]
    torch.testing.assert_close(_alone_logits(model, prompt), _alone_logits(plain.eval(), prompt), atol=0, rtol=0)
    assert any(isinstance(m, MultiLoraLinear) for m in model.modules())


def test_batched_generation_matches_generating_with_each_adapter_alone(served):
    base_dir, adapters, model, adapter_set, tokenizer = served
    settings = [dict(temperature=0.0, top_p=1.0, seed=0), dict(temperature=0.9, top_p=0.9, seed=7),
                dict(temperature=1.2, top_p=1.0, seed=3), dict(temperature=0.7, top_p=0.95, seed=11),
                dict(temperature=0.0, top_p=1.0, seed=0)]
    eos = _eos_ids(model, tokenizer)
    rows = [Row(ids=tokenizer(p)["input_ids"], adapter=name, eos_ids=eos, max_new_tokens=10, top_k=50, **s)
            for p, name, s in zip(PROMPTS, ROW_ADAPTERS, settings)]
    streams = [TextStream(tokenizer) for _ in rows]
    texts = [""] * len(rows)
    for step in generate_rows(model, adapter_set, rows, pad_id=tokenizer.pad_token_id):
        for i, token in step:
            texts[i] += streams[i].feed(token)
    texts = [text + stream.finish() for text, stream in zip(texts, streams)]
    for row, prompt, name, s, text in zip(rows, PROMPTS, ROW_ADAPTERS, settings, texts):
        alone, alone_tokenizer = load_for_inference(str(base_dir), adapter_dir=adapters[name] if name else None,
                                                    task="causal-lm")
        assert text == generate(alone, alone_tokenizer, prompt, max_new_tokens=10, top_k=50, **s)
        assert row.finish_reason in ("stop", "length") and row.generated == len(streams[rows.index(row)].ids)
    assert len(set(texts[:4])) == 4  # the adapters really answer differently


def test_a_stop_string_ends_the_text_just_before_it_and_holds_back_a_possible_start():
    tokenizer = tiny_models.tiny_tokenizer()
    stream = TextStream(tokenizer, stop=["END"])
    pieces = [stream.feed(t) for t in tokenizer("ab EN")["input_ids"]]
    assert "".join(pieces) == "ab " and not stream.stopped  # "EN" may start "END": held back
    assert stream.feed(tokenizer("D")["input_ids"][0]) == "" and stream.stopped
    assert stream.shown == "ab "
    loose = TextStream(tokenizer, stop=["END"])
    for t in tokenizer("ab EN")["input_ids"]:
        loose.feed(t)
    assert loose.finish() == "EN"  # the row ended without the stop string: nothing is lost


def test_an_adapter_with_a_trained_head_or_for_another_base_is_refused_by_name(served, bert_adapter, tmp_path):
    _, adapters, model, adapter_set, _ = served
    with pytest.raises(TrainerError, match="trains whole modules"):
        adapter_set.add("head", bert_adapter)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    import json
    from safetensors.torch import save_file
    (foreign / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "lora_alpha": 8}))
    save_file({"base_model.model.no.such.layer.lora_A.weight": torch.zeros(2, 4),
               "base_model.model.no.such.layer.lora_B.weight": torch.zeros(4, 2)},
              str(foreign / "adapter_model.safetensors"))
    with pytest.raises(TrainerError, match="has no module no.such.layer"):
        adapter_set.add("foreign", foreign)
    assert "foreign" not in adapter_set and "head" not in adapter_set


def test_removing_an_adapter_frees_its_slot_and_routing_to_it_is_refused(served):
    base_dir, adapters, model, _, tokenizer = served
    adapter_set = AdapterSet(load_model(str(base_dir), "causal-lm")[0].eval())
    adapter_set.add("a", adapters["a"])
    adapter_set.remove("a")
    assert all(not layer.updates for layer in adapter_set.layers.values())
    with pytest.raises(KeyError, match="'a' is not loaded"):
        with adapter_set.rows(["a"]):
            pass


@pytest.fixture(scope="module")
def bert_adapter(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert-adapter")
    base = tiny_models.save_tiny("bert", folder / "base")
    model, _ = load_model(str(base), "classification")
    settings = LoraSettings(rank=2, alpha=4, dropout=0.0, targets="attention")
    handle = apply_lora(model, settings, "classification")
    return save_adapter(model, folder / "adapter", base_model_name_or_path=str(base), task="classification",
                        settings=settings, target_modules=handle.target_modules,
                        modules_to_save=handle.modules_to_save)
