"""Preference rows: the three shapes are recognised, bad rows are named by row and field, the preview shows both
answers with their loss spans, and pairs are encoded with only the answers counting."""
import json

import tiny_models
from trainer.dpo import pair_features
from trainer.data.validate import validate_file

PLAIN = {"prompt": "Hi", "chosen": "Hello there!", "rejected": "go away"}
CHAT = {"messages": [{"role": "user", "content": "Hi"}], "chosen": {"role": "assistant", "content": "Hello!"},
        "rejected": {"role": "assistant", "content": "no"}}
OPENAI = {"input": {"messages": [{"role": "user", "content": "Hi"}]},
          "preferred_output": [{"role": "assistant", "content": "Hey"}],
          "non_preferred_output": [{"role": "assistant", "content": "bye"}]}


def _file(tmp_path, rows):
    path = tmp_path / "prefs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_plain_chat_and_openai_rows_are_one_preference_format_and_bad_rows_name_row_and_field(tmp_path):
    rows = [PLAIN, CHAT, OPENAI,
            {"prompt": "x", "chosen": "same", "rejected": "same"},
            {"prompt": "x", "chosen": 3, "rejected": "ok"},
            {"input": {"messages": []}, "preferred_output": "a", "non_preferred_output": [{"role": "assistant",
                                                                                           "content": "b"}]},
            {"chosen": "a", "rejected": "b"}]
    report = validate_file(_file(tmp_path, rows), tokenizer=tiny_models.tiny_tokenizer())
    assert report.format == "preference" and report.task == "causal-lm"
    assert report.valid_rows == 3 and report.usable
    found = {(p["row"], p["field"]): p["message"] for p in report.problems}
    assert "identical" in found[(4, "rejected")]
    assert found[(5, "chosen")] == "'chosen' must be text, got a number"
    assert "no messages" in found[(6, "input.messages")]
    assert "exactly one assistant message" in found[(6, "preferred_output")]
    assert "missing field 'prompt'" in found[(7, "prompt")]


def _spans(segments):
    """The preview's segments (one a token) joined into runs with the same loss flag."""
    runs = []
    for segment in segments:
        if runs and runs[-1][1] == segment["loss"]:
            runs[-1] = (runs[-1][0] + segment["text"], segment["loss"])
        else:
            runs.append((segment["text"], segment["loss"]))
    return runs


def test_the_preview_shows_both_answers_each_with_its_loss_span(tmp_path):
    report = validate_file(_file(tmp_path, [PLAIN, CHAT]), tokenizer=tiny_models.tiny_tokenizer())
    plain, chat = report.preview
    assert _spans(plain["segments"]) == [("Hi ", False), ("Hello there!</s>", True)]
    assert _spans(plain["rejected_segments"]) == [("Hi ", False), ("go away</s>", True)]
    assert _spans(chat["rejected_segments"]) == [("<|user|>\nHi\n<|assistant|>\n", False), ("no</s>\n", True)]


def test_a_pair_shares_its_prompt_tokens_and_only_answers_count():
    tokenizer = tiny_models.tiny_tokenizer()
    (pair,), counts = pair_features([{"prompt": "Hi", "chosen": "Hello there!", "rejected": "go away"}], tokenizer,
                                    max_length=64)
    prompt = tokenizer("Hi ")["input_ids"]
    for side, answer in (("chosen", "Hello there!"), ("rejected", "go away")):
        feature = pair[side]
        assert feature["input_ids"][:len(prompt)] == prompt
        counted = [token for token in feature["labels"] if token != -100]
        assert tokenizer.decode(counted) == answer + "</s>"
    # a pair whose prompt fills max_length has no answer token left: it is left out and counted
    assert pair_features([{"prompt": "x" * 80, "chosen": "a", "rejected": "b"}], tokenizer, max_length=16) == \
        ([], {"truncated": 1, "no_loss": 1})
