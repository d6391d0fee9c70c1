"""render: the loss mask covers exactly the completion / assistant text, checked against separate tokenizations."""
from __future__ import annotations

from tiny_models import tiny_tokenizer
from trainer.data.render import (DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, encode_batch, ensure_chat_template,
                                 estimate_tokens, render_preview, segments)

TOKENIZER = tiny_tokenizer()
PLAIN = tiny_tokenizer(chat_template=False)
EOS = TOKENIZER.eos_token_id


def ids(text: str, tokenizer=TOKENIZER) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def counted(feature: dict) -> list[int]:
    return [label for label in feature["labels"] if label != IGNORE_INDEX]


def encode(example, fmt, tokenizer=TOKENIZER, **options):
    options.setdefault("max_length", 1024)
    (encoded,) = encode_batch([example], fmt, tokenizer, **options)
    return encoded


def test_prompt_completion_masks_the_prompt_and_counts_completion_and_eos():
    encoded = encode({"prompt": "2+2=", "completion": "4"}, "prompt_completion")
    prompt_ids = ids("2+2= ")
    assert encoded.feature["input_ids"] == prompt_ids + ids("4") + [EOS]
    assert encoded.feature["labels"] == [IGNORE_INDEX] * len(prompt_ids) + ids("4") + [EOS]
    assert (encoded.full_length, encoded.loss_tokens) == (len(prompt_ids) + 2, 2)


def test_no_space_is_added_when_the_prompt_ends_with_whitespace():
    assert segments({"prompt": "Q:\n", "completion": "A"}, "prompt_completion") == [("Q:\n", False), ("A", True)]


def test_alpaca_template_with_and_without_input():
    with_input = {"instruction": "Sort", "input": "3, 1", "output": "1, 3"}
    assert segments(with_input, "alpaca") == [
        ("### Instruction:\nSort\n\n### Input:\n3, 1\n\n### Response:\n", False), ("1, 3", True)]
    assert segments({**with_input, "input": ""}, "alpaca")[0] == ("### Instruction:\nSort\n\n### Response:\n", False)


def test_chat_with_a_template_counts_each_assistant_turn_and_its_end_token():
    messages = [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"},
                {"role": "assistant", "content": "Ciao"}]
    encoded = encode({"messages": messages}, "chat")
    full = TOKENIZER.apply_chat_template(messages, tokenize=False)
    assert encoded.feature["input_ids"] == ids(full)
    assert counted(encoded.feature) == ids("Hello!</s>\n") + ids("Ciao</s>\n")


def test_chat_without_a_template_uses_the_documented_default():
    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}
    assert segments(example, "chat", PLAIN) == [("<|user|>\nHi\n<|assistant|>\n", False), ("Yo</s>\n", True)]
    encoded = encode(example, "chat", PLAIN)
    assert encoded.feature["input_ids"] == ids("<|user|>\nHi\n<|assistant|>\nYo</s>\n", PLAIN)
    assert counted(encoded.feature) == ids("Yo</s>\n", PLAIN)
    assert not PLAIN.chat_template  # rendering through the default leaves the tokenizer as it was


def test_the_default_chat_template_is_the_one_definition_of_the_default_rendering():
    example = {"messages": [{"role": "system", "content": "Be brief"}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Yo"}, {"role": "user", "content": "More"},
                            {"role": "assistant", "content": "No"}]}
    with_template = ensure_chat_template(tiny_tokenizer(chat_template=False))
    assert with_template.chat_template == DEFAULT_CHAT_TEMPLATE
    rendered = with_template.apply_chat_template(example["messages"], tokenize=False)
    assert "".join(text for text, _ in segments(example, "chat", PLAIN)) == rendered
    assert rendered == ("<|system|>\nBe brief\n<|user|>\nHi\n<|assistant|>\nYo</s>\n"
                        "<|user|>\nMore\n<|assistant|>\nNo</s>\n")
    # Without a tokenizer (estimates, previews) the same template renders, with no EOS text to write.
    assert "".join(text for text, _ in segments(example, "chat")) == rendered.replace("</s>", "")
    own = tiny_tokenizer(chat_template=False)
    own.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    assert ensure_chat_template(own).chat_template == "{% for m in messages %}{{ m['content'] }}{% endfor %}"


def test_a_template_that_is_not_prefix_stable_falls_back_to_finding_the_replies():
    tokenizer = tiny_tokenizer()
    # Writes the conversation length first, so a shorter conversation is not a prefix of the whole one.
    tokenizer.chat_template = ("{{ messages|length }}\n{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
                               "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}\n{% endfor %}")
    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hey"},
                            {"role": "user", "content": "Go"}, {"role": "assistant", "content": "Gone"}]}
    assert counted(encode(example, "chat", tokenizer).feature) == ids("Hey</s>") + ids("Gone</s>")


def test_train_on_prompt_counts_every_token():
    feature = encode({"prompt": "a", "completion": "b"}, "prompt_completion", train_on_prompt=True).feature
    assert feature["labels"] == feature["input_ids"]


def test_truncation_keeps_the_first_max_length_tokens():
    encoded = encode({"text": "abcdefghij"}, "text", max_length=4)
    assert encoded.feature == {"input_ids": ids("abcd"), "labels": ids("abcd")}
    assert (encoded.full_length, encoded.loss_tokens) == (11, 4)


def test_classification_encodes_the_text_and_the_label_id():
    encoder = tiny_tokenizer(chat_template=False, encoder=True)
    (encoded,) = encode_batch([{"text": "ab", "label": "bug"}], "classification", encoder, max_length=16,
                              label2id={"billing": 0, "bug": 1})
    assert encoded.feature == {"input_ids": encoder("ab")["input_ids"], "label": 1}


def test_batch_encoding_equals_one_by_one():
    examples = [{"prompt": "x" * n, "completion": "y" * (5 - n)} for n in range(1, 5)]
    batched = encode_batch(examples, "prompt_completion", TOKENIZER, max_length=64)
    assert batched == [encode(example, "prompt_completion", max_length=64) for example in examples]


def test_preview_with_a_tokenizer_shows_eos_and_truncation():
    parts = render_preview({"prompt": "Q", "completion": "A"}, "prompt_completion", PLAIN)
    assert parts == [("Q ", False), ("A</s>", True)]
    assert render_preview({"text": "abcdef"}, "text", PLAIN, max_length=3) == [("abc", True)]


def test_preview_keeps_multibyte_characters_whole():
    parts = render_preview({"prompt": "caf\u00e9", "completion": "\u00fcber"}, "prompt_completion", PLAIN)
    assert parts == [("caf\u00e9 ", False), ("\u00fcber</s>", True)]


def test_preview_without_a_tokenizer_shows_the_template_text():
    example = {"instruction": "Add 1 and 2.", "input": "", "output": "3"}
    assert render_preview(example, "alpaca") == [("### Instruction:\nAdd 1 and 2.\n\n### Response:\n", False),
                                                 ("3", True)]


def test_length_estimate_is_bytes_over_four_rounded_up():
    assert estimate_tokens({"text": "x" * 9}, "text") == 3
    assert estimate_tokens({"text": "\u00e9" * 4}, "text") == 2  # 8 UTF-8 bytes


def test_preview_with_a_wordpiece_tokenizer_keeps_the_spaces_it_drops(minilm_dir):
    from transformers import AutoTokenizer

    wordpiece = AutoTokenizer.from_pretrained(minilm_dir)
    text = "Astronomers report that the Milky Way is  warping."
    parts = render_preview({"text": text, "label": "space"}, "classification", wordpiece, per_token=True)
    assert "".join(piece for piece, _ in parts) == f"[CLS]{text}[SEP]"
    tokens = wordpiece.convert_ids_to_tokens(wordpiece(text)["input_ids"])
    assert len(parts) == len(tokens)  # one segment per token: the preview can draw their boundaries
    assert [piece.strip().lower() for piece, _ in parts[1:-1]] == [t.removeprefix("##") for t in tokens[1:-1]]
