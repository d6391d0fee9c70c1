"""Generation, streaming, classification and loading base / adapter / merged models for inference."""
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from trainer.errors import ConfigError
from trainer.inference import (choose_token, classify, generate, load_for_inference, logits_processors,
                               prompt_ids, sample_token_ids, stream_generate)
from trainer.inject import lora_modules
from trainer.models import load_model

PROMPT = "The quick brown fox"


@pytest.fixture(scope="module")
def llama(tiny_llama_dir):
    return load_model(str(tiny_llama_dir), "causal-lm")


def _reference_generate(model, tokenizer, prompt, **settings) -> str:
    """transformers' own generate, decoded the way ours is (new tokens only, special tokens dropped)."""
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), pad_token_id=tokenizer.pad_token_id,
                         **settings)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.parametrize("fixture", ["tiny_llama_dir", "tiny_gpt2_dir", "tiny_neox_dir"])
def test_greedy_text_matches_transformers_generate(fixture, request):
    model, tokenizer = load_model(str(request.getfixturevalue(fixture)), "causal-lm")
    ours = generate(model, tokenizer, PROMPT, temperature=0, max_new_tokens=16, repetition_penalty=1.3)
    reference = _reference_generate(model, tokenizer, PROMPT, do_sample=False, max_new_tokens=16,
                                    repetition_penalty=1.3)
    assert ours == reference and len(ours) > 0


def test_top_k_of_one_samples_the_greedy_token(llama):
    model, tokenizer = llama
    greedy = generate(model, tokenizer, PROMPT, temperature=0, max_new_tokens=12)
    assert generate(model, tokenizer, PROMPT, temperature=1.3, top_k=1, max_new_tokens=12, seed=5) == greedy


def test_same_seed_and_settings_give_the_same_text_and_other_seeds_differ(llama):
    model, tokenizer = llama
    settings = dict(temperature=1.5, top_p=1.0, top_k=0, max_new_tokens=20)
    first = generate(model, tokenizer, PROMPT, seed=1, **settings)
    torch.manual_seed(123)  # the global RNG plays no part
    assert generate(model, tokenizer, PROMPT, seed=1, **settings) == first
    others = {generate(model, tokenizer, PROMPT, seed=seed, **settings) for seed in (2, 3, 4)}
    assert others - {first}


def test_sampling_draws_from_the_top_p_filtered_temperature_scaled_distribution():
    """Token frequencies over many draws follow softmax(logits / T) renormalised over the top-p nucleus."""
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]])
    processors = logits_processors(temperature=2.0, top_p=0.8, top_k=0, repetition_penalty=1.0)
    scores = processors(torch.tensor([[0]]), logits.clone())
    probs = (logits[0] / 2.0).softmax(-1)
    nucleus = 4  # smallest prefix of the sorted probabilities holding >= 0.8 of the mass
    assert probs[:nucleus - 1].sum() < 0.8 <= probs[:nucleus].sum()
    expected = torch.cat([probs[:nucleus] / probs[:nucleus].sum(), torch.zeros(2)])
    generator = torch.Generator().manual_seed(0)
    draws = 4000
    counts = torch.bincount(torch.tensor([choose_token(scores, greedy=False, generator=generator)
                                          for _ in range(draws)]), minlength=6)
    torch.testing.assert_close(counts / draws, expected, atol=0.03, rtol=0)  # binomial s.e. <= 0.008


def test_repetition_penalty_scales_seen_tokens_like_transformers():
    logits = torch.tensor([[2.0, -1.0, 0.5]])
    scores = logits_processors(temperature=0, top_p=1.0, top_k=0, repetition_penalty=2.0)(torch.tensor([[0, 1]]),
                                                                                       logits.clone())
    torch.testing.assert_close(scores, torch.tensor([[1.0, -2.0, 0.5]]))


def test_streamed_pieces_arrive_as_generated_and_join_to_the_full_text(llama):
    model, tokenizer = llama
    forward_calls = []
    hook = model.register_forward_hook(lambda *args: forward_calls.append(1))
    try:
        stream = stream_generate(model, tokenizer, PROMPT, temperature=0.9, max_new_tokens=24, seed=7)
        first = next(stream)
        calls_at_first_piece = len(forward_calls)
        pieces = [first, *stream]
    finally:
        hook.remove()
    assert calls_at_first_piece < len(forward_calls)
    assert len(pieces) > 1
    assert "".join(pieces) == generate(model, tokenizer, PROMPT, temperature=0.9, max_new_tokens=24, seed=7)


def test_max_new_tokens_and_the_context_length_bound_the_output(llama):
    model, tokenizer = llama
    settings = dict(temperature=0, top_p=1.0, top_k=0, repetition_penalty=1.0, seed=0, eos_ids=set())
    assert len(list(sample_token_ids(model, [5, 6, 7], max_new_tokens=9, **settings))) == 9
    context = model.config.max_position_embeddings
    assert len(list(sample_token_ids(model, [5] * (context - 4), max_new_tokens=50, **settings))) == 4


def test_generation_stops_at_eos(llama):
    model, tokenizer = llama
    first_greedy = next(sample_token_ids(model, tokenizer(PROMPT)["input_ids"], temperature=0, top_p=1.0,
                                         top_k=0, max_new_tokens=1, repetition_penalty=1.0, seed=0, eos_ids=set()))
    original = model.generation_config.eos_token_id
    model.generation_config.eos_token_id = [first_greedy]
    try:
        assert generate(model, tokenizer, PROMPT, temperature=0, max_new_tokens=10) == ""
    finally:
        model.generation_config.eos_token_id = original


def test_long_prompt_keeps_its_last_tokens(llama):
    _, tokenizer = llama
    full = tokenizer("one two three four five six")["input_ids"]
    assert prompt_ids(tokenizer, "one two three four five six", max_prompt_tokens=4) == full[-4:]


def test_chat_messages_are_rendered_with_the_chat_template(llama):
    _, tokenizer = llama
    messages = [{"role": "user", "content": "Hi there"}]
    expected = tokenizer("<|user|>\nHi there\n<|assistant|>\n", add_special_tokens=False)["input_ids"]
    assert prompt_ids(tokenizer, messages, max_prompt_tokens=100) == expected


def test_chat_messages_without_a_chat_template_are_refused(tiny_bert_dir):
    _, tokenizer = load_model(str(tiny_bert_dir), "classification")
    with pytest.raises(ConfigError, match="no chat template"):
        prompt_ids(tokenizer, [{"role": "user", "content": "Hi"}], max_prompt_tokens=10)


@pytest.mark.parametrize("setting, field", [
    (dict(temperature=-1), "temperature"), (dict(top_p=0), "top_p"), (dict(top_k=-2), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens"), (dict(repetition_penalty=0), "repetition_penalty"),
    (dict(max_prompt_tokens=0), "max_prompt_tokens"),
])
def test_out_of_range_settings_are_config_errors(llama, setting, field):
    model, tokenizer = llama
    with pytest.raises(ConfigError) as caught:
        generate(model, tokenizer, PROMPT, **setting)
    assert caught.value.field == field


def test_a_suspended_stream_leaves_autograd_and_train_mode_to_the_caller(llama):
    model, tokenizer = llama
    model.train()
    try:
        stream = stream_generate(model, tokenizer, PROMPT, max_new_tokens=5)
        next(stream)
        assert torch.is_grad_enabled() and not torch.is_inference_mode_enabled()
        assert model.training
        list(stream)
    finally:
        model.eval()


def test_generation_switches_dropout_off_and_restores_train_mode(llama):
    model, tokenizer = llama
    model.train()
    try:
        seen_modes = []
        hook = model.register_forward_hook(lambda module, *args: seen_modes.append(module.training))
        generate(model, tokenizer, PROMPT, max_new_tokens=2)
        hook.remove()
        assert seen_modes and not any(seen_modes)
        assert model.training
    finally:
        model.eval()


def test_classify_gives_softmax_probabilities_by_label_name_most_likely_first(tiny_bert_dir):
    model, tokenizer = load_model(str(tiny_bert_dir), "classification")
    text = "my invoice is wrong"
    with torch.no_grad():
        expected = model(**tokenizer(text, return_tensors="pt")).logits[0].softmax(-1)
    result = classify(model, tokenizer, text)
    assert set(result) == {"billing", "bug", "other"}
    for i, label in model.config.id2label.items():
        assert result[label] == pytest.approx(float(expected[i]), abs=1e-6)
    assert list(result.values()) == sorted(result.values(), reverse=True)


def test_classify_refuses_empty_text(tiny_bert_dir):
    model, tokenizer = load_model(str(tiny_bert_dir), "classification")
    with pytest.raises(ConfigError):
        classify(model, tokenizer, "   ")


def test_base_and_merged_folders_load_with_their_task(tmp_path, tiny_bert_dir, tiny_llama_dir):
    base, _ = load_for_inference(str(tiny_llama_dir))
    assert type(base).__name__ == "LlamaForCausalLM" and not base.training
    merged, tokenizer = load_for_inference("anything", merged_dir=tiny_bert_dir)
    assert type(merged).__name__ == "BertForSequenceClassification"
    assert set(classify(merged, tokenizer, "hello")) == {"billing", "bug", "other"}


def test_adapter_and_merged_folder_together_are_refused(tmp_path, tiny_llama_dir):
    with pytest.raises(ConfigError, match="not both"):
        load_for_inference(str(tiny_llama_dir), adapter_dir=tmp_path, merged_dir=tmp_path)


def _peft_adapter(folder, task_type, out_dir, num_labels=None, **lora):
    """Save a PEFT LoRA adapter with non-zero B on `folder`; return the PEFT model for reference outputs."""
    task = "classification" if task_type == "SEQ_CLS" else "causal-lm"
    base, _ = load_model(str(folder), task, num_labels=num_labels)
    peft_model = get_peft_model(base, LoraConfig(task_type=task_type, r=4, lora_alpha=8, **lora))
    torch.manual_seed(3)
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name or "modules_to_save" in name:
                parameter.copy_(torch.randn_like(parameter) * 0.3)
    peft_model.save_pretrained(out_dir)
    return peft_model.eval()


def test_base_plus_peft_adapter_is_applied_unmerged_and_matches_peft(tmp_path, tiny_llama_dir):
    reference = _peft_adapter(tiny_llama_dir, "CAUSAL_LM", tmp_path, target_modules=["q_proj", "v_proj"])
    model, tokenizer = load_for_inference(str(tiny_llama_dir), adapter_dir=tmp_path)
    assert len(list(lora_modules(model))) == 2 * model.config.num_hidden_layers
    ids = torch.tensor([tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(input_ids=ids).logits)
    assert generate(model, tokenizer, PROMPT, temperature=0, max_new_tokens=8) \
        == generate(reference, tokenizer, PROMPT, temperature=0, max_new_tokens=8)


def test_classification_adapter_brings_its_head_and_label_names(tmp_path, tiny_bert_dir):
    reference = _peft_adapter(tiny_bert_dir, "SEQ_CLS", tmp_path, target_modules=["query", "value"])
    labels = {0: "billing", 1: "bug", 2: "other"}
    (tmp_path / "label_mapping.json").write_text(json.dumps({"id2label": labels}))
    model, tokenizer = load_for_inference(str(tiny_bert_dir), adapter_dir=tmp_path)
    text = "the app crashes on start"
    with torch.no_grad():
        expected = reference(**tokenizer(text, return_tensors="pt")).logits[0].softmax(-1)
    result = classify(model, tokenizer, text)
    assert {label: round(p, 5) for label, p in result.items()} \
        == {labels[i]: round(float(expected[i]), 5) for i in range(3)}


def test_classification_adapter_without_label_names_gets_a_head_of_the_saved_width(tmp_path, minilm_dir):
    reference = _peft_adapter("demo/minilm-l6", "SEQ_CLS", tmp_path, target_modules=["query", "value"],
                              num_labels=5)
    model, tokenizer = load_for_inference("demo/minilm-l6", adapter_dir=tmp_path)
    text = "refund my order"
    with torch.no_grad():
        expected = reference(**tokenizer(text, return_tensors="pt")).logits[0].softmax(-1)
    result = classify(model, tokenizer, text)
    assert {label: round(p, 5) for label, p in result.items()} \
        == {f"LABEL_{i}": round(float(expected[i]), 5) for i in range(5)}
