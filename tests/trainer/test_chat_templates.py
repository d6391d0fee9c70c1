"""Chat rows rendered with the base model's own chat template (Llama 3, ChatML, ChatML with generation marks,
Gemma styles written into locally saved tokenizers): the text, the loss on exactly the assistant turns, Gemma's
refused system role, refused conversations as row problems, the validation preview and playground prompts."""
import itertools
import json

import pytest

import tiny_models
from trainer.config import TrainConfig
from trainer.data.dataset import prepare
from trainer.data.render import (DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, TemplateRefused, encode_batch,
                                 render_chat)
from trainer.data.validate import validate_file
from trainer.inference import prompt_ids, prompt_text
from trainer.models import load_tokenizer

CONVERSATION = [{"role": "system", "content": "Answer in one word."},
                {"role": "user", "content": "Capital of France?"},
                {"role": "assistant", "content": "Paris."},
                {"role": "user", "content": "And of Germany?"},
                {"role": "assistant", "content": "Berlin."}]
# What counts toward the loss for each style: each assistant turn as its template writes it. The marked
# template marks the reply and <|im_end|> only; the others count to the end of the turn (offset alignment).
COUNTED = {"llama3": ["Paris.<|eot_id|>", "Berlin.<|eot_id|>"],
           "chatml": ["Paris.<|im_end|>\n", "Berlin.<|im_end|>\n"],
           "chatml-marked": ["Paris.<|im_end|>", "Berlin.<|im_end|>"],
           "gemma": ["Paris.<end_of_turn>\n", "Berlin.<end_of_turn>\n"]}
NO_SYSTEM = CONVERSATION[1:]


@pytest.fixture(scope="module")
def saved_tokenizers(tmp_path_factory):
    """style -> the tokenizer as saved with its template and loaded back the way training loads it."""
    loaded = {}
    for style in tiny_models.CHAT_STYLES:
        folder = tmp_path_factory.mktemp(f"chat-{style}")
        tiny_models.chat_tokenizer(style).save_pretrained(folder)
        loaded[style] = load_tokenizer(folder)
    return loaded


def _encode(messages, tokenizer, max_length=512):
    return encode_batch([{"messages": messages}], "chat", tokenizer, max_length=max_length)[0]


def _counted_runs(tokenizer, feature) -> list[str]:
    """The decoded runs of consecutive tokens that count toward the loss."""
    runs, current = [], []
    for token, label in zip(feature["input_ids"], feature["labels"]):
        if label != IGNORE_INDEX:
            current.append(token)
        elif current:
            runs, current = runs + [current], []
    runs += [current] if current else []
    return [tokenizer.decode(run) for run in runs]


@pytest.mark.parametrize("style", list(tiny_models.CHAT_STYLES))
def test_rows_are_rendered_with_the_models_own_template_and_the_loss_covers_exactly_the_assistant_turns(
        style, saved_tokenizers):
    tokenizer = saved_tokenizers[style]
    assert tokenizer.chat_template == tiny_models.CHAT_STYLES[style][2] != DEFAULT_CHAT_TEMPLATE
    messages = NO_SYSTEM if style == "gemma" else CONVERSATION
    encoded = _encode(messages, tokenizer)
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert encoded.feature["input_ids"] == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "<|assistant|>" not in tokenizer.decode(encoded.feature["input_ids"])  # never our default's markers
    assert _counted_runs(tokenizer, encoded.feature) == COUNTED[style]
    assert encoded.loss_tokens == sum(len(tokenizer(run, add_special_tokens=False)["input_ids"])
                                      for run in COUNTED[style])


def test_a_tokenizer_with_named_templates_renders_rows_with_its_default_one():
    tokenizer = tiny_models.chat_tokenizer("chatml")
    tokenizer.chat_template = {"default": tiny_models.CHATML_MARKED_TEMPLATE, "tool_use": tiny_models.LLAMA3_TEMPLATE}
    assert _counted_runs(tokenizer, _encode(CONVERSATION, tokenizer).feature) == COUNTED["chatml-marked"]


def test_a_marked_template_counts_what_transformers_assistant_mask_marks(saved_tokenizers):
    tokenizer = saved_tokenizers["chatml-marked"]
    theirs = tokenizer.apply_chat_template(CONVERSATION, tokenize=True, return_dict=True,
                                           return_assistant_tokens_mask=True)
    ours = _encode(CONVERSATION, tokenizer).feature
    assert ours["input_ids"] == theirs["input_ids"]
    assert [label != IGNORE_INDEX for label in ours["labels"]] == [bool(m) for m in theirs["assistant_masks"]]


def test_a_system_message_the_template_refuses_is_folded_into_the_first_user_turn(saved_tokenizers):
    tokenizer = saved_tokenizers["gemma"]
    with pytest.raises(Exception, match="System role not supported"):
        tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    folded = [{"role": "user", "content": "Answer in one word.\n\nCapital of France?"}, *CONVERSATION[2:]]
    expected = tokenizer.apply_chat_template(folded, tokenize=False)
    assert render_chat(tokenizer, CONVERSATION) == expected
    encoded = _encode(CONVERSATION, tokenizer)
    assert tokenizer.decode(encoded.feature["input_ids"]) == expected
    assert _counted_runs(tokenizer, encoded.feature) == COUNTED["gemma"]
    # The playground and inference render prompts the same way.
    prompt = CONVERSATION[:2]
    assert prompt_text(tokenizer, prompt) == tokenizer.apply_chat_template(folded[:1], tokenize=False,
                                                                           add_generation_prompt=True)
    assert prompt_ids(tokenizer, prompt, 1000) == tokenizer(prompt_text(tokenizer, prompt),
                                                            add_special_tokens=False)["input_ids"]


def _write_rows(path, conversations):
    path.write_text("".join(json.dumps({"messages": messages}) + "\n" for messages in conversations))
    return path


def test_a_conversation_the_template_refuses_is_a_row_problem_in_validation_and_training(saved_tokenizers,
                                                                                        tmp_path):
    tokenizer = saved_tokenizers["gemma"]
    twice_user = [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"},
                  {"role": "assistant", "content": "Hey."}]
    with pytest.raises(TemplateRefused, match="roles must alternate"):
        render_chat(tokenizer, twice_user)
    with pytest.raises(TemplateRefused, match="roles must alternate"):  # not "System role not supported"
        render_chat(tokenizer, [CONVERSATION[0], *twice_user])
    data = _write_rows(tmp_path / "chat.jsonl", [NO_SYSTEM, twice_user, CONVERSATION, NO_SYSTEM])

    report = validate_file(data, tokenizer=tokenizer)
    assert report.valid_rows == 3 and report.usable
    assert report.problems == [{"row": 2, "field": "messages", "file": "train",
                                "message": "the model's chat template refuses this conversation: Conversation "
                                           "roles must alternate user/assistant/user/assistant/..."}]

    config = TrainConfig(model="unused", data=str(data), out=str(tmp_path / "out"), task="causal-lm",
                         eval_fraction=0.0)
    train, _, _, stats = prepare(config, tokenizer)
    assert len(train) == 3 and stats["skipped_rows"] == 1
    assert "roles must alternate" in stats["problems"][0]["message"]


def test_the_validation_preview_shows_the_models_template_and_what_counts(saved_tokenizers, tmp_path):
    tokenizer = saved_tokenizers["llama3"]
    report = validate_file(_write_rows(tmp_path / "chat.jsonl", [CONVERSATION]), tokenizer=tokenizer)
    segments = report.preview[0]["segments"]
    assert "".join(s["text"] for s in segments) == tokenizer.apply_chat_template(CONVERSATION, tokenize=False)
    # The preview keeps one segment per token: the counted runs are its consecutive counted tokens.
    runs = [("".join(s["text"] for s in run), loss) for loss, run in itertools.groupby(segments, lambda s: s["loss"])]
    assert [text for text, loss in runs if loss] == COUNTED["llama3"]


def test_a_training_run_uses_and_saves_the_base_models_own_template_and_its_eval_loss_counts_only_replies(
        tmp_path):
    """Gemma-style base, system messages in the data: the run trains on the folded conversations, keeps the
    model's template with the adapter, and its eval loss is the loss over exactly the assistant turns."""
    import torch

    from trainer.config import LoraSettings
    from trainer.inference import load_for_inference
    from trainer.train import train

    base = tiny_models.save_chat_model("gemma", tmp_path / "gemma")
    rows = [[CONVERSATION[0], {"role": "user", "content": f"Colour {n}?"}, {"role": "assistant", "content": n}]
            for n in ("red", "green", "blue", "amber", "teal", "grey", "pink", "navy")]
    data = _write_rows(tmp_path / "chat.jsonl", rows)
    eval_data = _write_rows(tmp_path / "eval.jsonl", [CONVERSATION])
    metrics = train(TrainConfig(model=str(base), data=str(data), eval_data=str(eval_data), out=str(tmp_path / "run"),
                                max_steps=2, batch_size=4, lora=LoraSettings(rank=4, dropout=0.0)))
    assert metrics["data"]["skipped_rows"] == 0
    assert load_tokenizer(tmp_path / "run" / "adapter").chat_template == tiny_models.GEMMA_TEMPLATE

    # Independently: transformers' loss on the folded conversation, labels only on the two model turns.
    model, tokenizer = load_for_inference(str(base), adapter_dir=tmp_path / "run" / "adapter")
    folded = [{"role": "user", "content": "Answer in one word.\n\nCapital of France?"}, *CONVERSATION[2:]]
    text = tokenizer.apply_chat_template(folded, tokenize=False)
    ids = torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]])
    labels = torch.full_like(ids, -100)
    cursor = 0
    for reply in COUNTED["gemma"]:
        start = text.index(reply, cursor)
        before = len(tokenizer(text[:start], add_special_tokens=False)["input_ids"])
        count = len(tokenizer(reply, add_special_tokens=False)["input_ids"])
        labels[0, before:before + count] = ids[0, before:before + count]
        cursor = start + len(reply)
    with torch.no_grad():
        expected = model(input_ids=ids, labels=labels).loss.item()
    assert metrics["final_eval"]["eval_loss"] == pytest.approx(expected, rel=1e-5)
    assert metrics["final_eval"]["eval_tokens"] == int((labels[0, 1:] != -100).sum())
