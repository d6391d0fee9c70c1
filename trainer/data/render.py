"""Turn canonical examples into what the model sees: token ids, and labels with the loss mask.

Every example is first laid out as text *segments* `[(text, counts_toward_loss), ...]`; joining them gives the
exact string that is tokenized, once, with offsets. A token counts toward the loss when its characters overlap a
counting segment; other positions get label -100 (`IGNORE_INDEX`), unless `train_on_prompt` is set.

Templates (the counting part is in [brackets]):
- text:              [text] EOS
- prompt_completion: prompt + [completion] EOS. When neither side has whitespace at the join, one space is put
                     between them ("2+2=" + "4" -> "2+2= 4").
- alpaca:            "### Instruction:\\n{instruction}\\n\\n" + ("### Input:\\n{input}\\n\\n" when input is not blank)
                     + "### Response:\\n" + [output] EOS
- chat:              the tokenizer's own chat template (the base model's), never ours when it has one; else
                     DEFAULT_CHAT_TEMPLATE: for each message "<|{role}|>\\n" + content + "\\n", where an assistant
                     message is "<|assistant|>\\n" + [content EOS "\\n"]; the generation prompt is "<|assistant|>\\n".
                     What counts is each assistant turn, found in one of three ways:
                     1. a template that marks them (`{% generation %}...{% endgeneration %}`, the marks behind
                        transformers' assistant masks): exactly the marked text;
                     2. otherwise, by offsets: from the end of the generation prompt that precedes the turn to the
                        end of the turn as the template writes it (its end-of-turn token included), found by
                        rendering the conversation up to each turn;
                     3. a template that is not prefix-stable (e.g. one that drops earlier reasoning): each
                        assistant `content` (and an EOS right after it).
                     A template that refuses a system message (Gemma's) gets it folded into the first user turn,
                     "{system}\\n\\n{user}", as Gemma 3's own template does; a conversation the template refuses
                     otherwise is a row problem (`TemplateRefused`) with the template's own message.
                     A run on chat data saves its tokenizer with the template it used (`ensure_chat_template`), so
                     inference and other tools render prompts the same way (`render_chat`).
- classification:    the text alone; the label id is the target.

"EOS" is the tokenizer's eos token, appended as an id for non-chat formats (counted), written as text in the
chat template. The tokenizer's own special tokens (BOS, [CLS]/[SEP]) are added for non-chat formats; chat
templates write theirs into the text. Sequences longer than `max_length` keep their first `max_length` tokens.
"""
from __future__ import annotations

import functools
import re
from typing import NamedTuple

from trainer.errors import DataError

IGNORE_INDEX = -100
# Rough tokens per byte for a length estimate without a tokenizer (English BPE averages about 4 bytes a token).
BYTES_PER_TOKEN_ESTIMATE = 4
Segments = list[tuple[str, bool]]
# The chat template for tokenizers without one (Jinja, as transformers renders it). Newlines follow expressions,
# never block tags, so trim_blocks (on in transformers) changes nothing.
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
GENERATION_MARK = re.compile(r"\{%-?\s*generation\s*-?%\}")


class TemplateRefused(DataError):
    """The model's chat template raised on a conversation (e.g. roles that do not alternate)."""


class Encoded(NamedTuple):
    """One example's training feature (`input_ids` + `labels`, or `label` for classification), its token count
    before truncation, how many of the kept tokens count toward the loss, and why it could not be rendered (the
    feature is then empty)."""

    feature: dict
    full_length: int
    loss_tokens: int
    problem: str | None = None


def segments(example: dict, fmt: str, tokenizer=None) -> Segments:
    """The example as text segments `(text, counts_toward_loss)`, joined exactly as it is tokenized."""
    if fmt == "chat":
        return chat_segments(example["messages"], tokenizer)
    if fmt == "text":
        return [(example["text"], True)]
    if fmt == "classification":
        return [(example["text"], False)]
    if fmt == "alpaca":
        prompt = f"### Instruction:\n{example['instruction']}\n\n"
        if example["input"].strip():
            prompt += f"### Input:\n{example['input']}\n\n"
        return [(prompt + "### Response:\n", False), (example["output"], True)]
    prompt, completion = example["prompt"], example["completion"]
    if prompt[-1:].isspace() or completion[:1].isspace():
        return [(prompt, False), (completion, True)]
    return [(prompt + " ", False), (completion, True)]


def estimate_tokens(example: dict, fmt: str) -> int:
    """A tokenizer-free length estimate: UTF-8 bytes of the rendered text / BYTES_PER_TOKEN_ESTIMATE, rounded up."""
    size = sum(len(text.encode("utf-8")) for text, _ in segments(example, fmt))
    return max(1, -(-size // BYTES_PER_TOKEN_ESTIMATE))


def encode_batch(examples: list[dict], fmt: str, tokenizer, *, max_length: int, train_on_prompt: bool = False,
                 label2id: dict[str, int] | None = None) -> list[Encoded]:
    """Tokenize many examples in one tokenizer call (fast tokenizers run it in Rust). For classification
    `label2id` maps each example's label to its id."""
    return [encoded for encoded, _, _ in _encode(examples, fmt, tokenizer, max_length, train_on_prompt, label2id)]


def render_preview(example: dict, fmt: str, tokenizer=None, *, max_length: int | None = None,
                   train_on_prompt: bool = False, per_token: bool = False) -> Segments:
    """What the model sees, as `(text, counts_toward_loss)` segments for the web preview.

    With a tokenizer the segments come from the tokens themselves (after truncation to `max_length`; special
    tokens without characters of their own, such as an appended EOS, shown by name); without one, from the
    template's text. Each token's segment starts where the previous one ended, so characters no token covers
    (the spaces a WordPiece tokenizer drops) stay in the text. `per_token` keeps one segment per token (the
    preview draws the boundaries) instead of merging neighbours that count alike.
    """
    if tokenizer is None:
        return _merge([(text, counts or train_on_prompt) for text, counts in segments(example, fmt) if text])
    ((encoded, offsets, text),) = _encode([example], fmt, tokenizer, max_length or 2**31, train_on_prompt, None)
    ids = encoded.feature["input_ids"]
    labels = encoded.feature.get("labels", [IGNORE_INDEX] * len(ids))
    pieces, shown_to = [], 0
    for position, token_id in enumerate(ids):
        start, end = offsets[position] if position < len(offsets) else (0, 0)
        if end > start:  # byte-level tokens of one character share its span: show the character once
            piece, shown_to = text[shown_to:end], max(shown_to, end)
        else:
            piece = tokenizer.convert_ids_to_tokens(token_id)
        pieces.append((piece, labels[position] != IGNORE_INDEX))
    pieces = [piece for piece in pieces if piece[0]]
    return pieces if per_token else _merge(pieces)


def _encode(examples, fmt, tokenizer, max_length, train_on_prompt, label2id):
    """[(Encoded, token character offsets, rendered text)] per example."""
    laid_out, problems = [], []
    for example in examples:
        try:
            laid_out.append(segments(example, fmt, tokenizer))
            problems.append(None)
        except TemplateRefused as error:
            laid_out.append([])
            problems.append(str(error))
    texts = ["".join(text for text, _ in parts) for parts in laid_out]
    tokenized = _tokenize(tokenizer, texts, laid_out, add_special_tokens=fmt != "chat")
    eos = tokenizer.eos_token_id if fmt not in ("chat", "classification") else None
    results = []
    for example, parts, text, (ids, offsets), problem in zip(examples, laid_out, texts, tokenized, problems):
        if problem is not None:
            results.append((Encoded({"input_ids": [], "labels": []}, 0, 0, problem), [], ""))
            continue
        if fmt == "classification":
            feature = {"input_ids": ids[:max_length], "label": label2id[example["label"]] if label2id else -1}
            results.append((Encoded(feature, len(ids), 1), offsets, text))
            continue
        labels = _labels(ids, offsets, _ranges(parts), train_on_prompt)
        if eos is not None and (not ids or ids[-1] != eos):
            ids, labels = ids + [eos], labels + [eos]
        kept = labels[:max_length]
        feature = {"input_ids": ids[:max_length], "labels": kept}
        results.append((Encoded(feature, len(ids), sum(label != IGNORE_INDEX for label in kept)), offsets, text))
    return results


def _eos_text(tokenizer) -> str:
    return (getattr(tokenizer, "eos_token", None) or "") if tokenizer is not None else ""


def ensure_chat_template(tokenizer):
    """Give `tokenizer` DEFAULT_CHAT_TEMPLATE when it has no chat template of its own; returns it."""
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


def chat_template_of(tokenizer) -> str:
    """The template chat rows are rendered with: the tokenizer's own (its "default" one when it has several by
    name), else DEFAULT_CHAT_TEMPLATE."""
    if tokenizer is None or not getattr(tokenizer, "chat_template", None):
        return DEFAULT_CHAT_TEMPLATE
    return tokenizer.get_chat_template()


def render_chat(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    """The conversation as the model sees it: its chat template's text, a refused system message folded into the
    first user turn (see the module docstring). Raises TemplateRefused when the template refuses it otherwise."""
    render = _chat_renderer(tokenizer)
    messages, full = accepted_conversation(messages, render)
    return render(messages, True) if add_generation_prompt else full


def accepted_conversation(messages: list[dict], render) -> tuple[list[dict], str]:
    """(`messages`, or with the system message folded into the first user turn when only that makes the template
    accept them; their rendering) for `render(turns, add_generation_prompt)`."""
    try:
        return messages, render(messages, False)
    except Exception as error:  # noqa: BLE001 - Jinja templates raise whatever they like (raise_exception)
        refusal = error
    folded = fold_system_message(messages)
    if folded is not messages:
        try:
            return folded, render(folded, False)
        except Exception as error:  # noqa: BLE001 - with the system message folded, what is still wrong
            refusal = error
    raise TemplateRefused(f"the model's chat template refuses this conversation: {refusal}") from None


def fold_system_message(messages: list[dict]) -> list[dict]:
    """A leading system message merged into the user message after it ("{system}\\n\\n{user}"), or `messages`
    itself when it does not start with system followed by user."""
    if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
        return messages
    first_user = {**messages[1], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
    return [first_user, *messages[2:]]


def chat_segments(messages: list[dict], tokenizer=None) -> Segments:
    """A chat example's segments: the assistant turns count (marked, aligned by offsets, or searched)."""
    render = _chat_renderer(tokenizer)
    messages, full = accepted_conversation(messages, render)
    if tokenizer is not None and GENERATION_MARK.search(chat_template_of(tokenizer)):
        return _marked_chat_segments(messages, tokenizer)
    return _chat_template_segments(full, messages, render, _eos_text(tokenizer))


def _marked_chat_segments(messages: list[dict], tokenizer) -> Segments:
    """Segments from the template's own {% generation %} marks: the character spans transformers turns into
    assistant masks, read before tokenization."""
    from transformers.utils.chat_template_utils import render_jinja_template

    (full,), (spans,) = render_jinja_template(conversations=[messages], chat_template=chat_template_of(tokenizer),
                                              return_assistant_tokens_mask=True, **tokenizer.special_tokens_map)
    parts: Segments = []
    cursor = 0
    for start, end in spans:
        parts += [(full[cursor:start], False), (full[start:end], True)]
        cursor = end
    parts.append((full[cursor:], False))
    return _merge([part for part in parts if part[0]])


def _chat_renderer(tokenizer):
    """render(turns, add_generation_prompt) -> text, with the tokenizer's template or DEFAULT_CHAT_TEMPLATE
    (rendered by Jinja alone, with no EOS text, when there is no tokenizer)."""
    if tokenizer is None:
        template = _compiled_default_template()
        return lambda turns, prompt: template.render(messages=turns, add_generation_prompt=prompt, eos_token="")
    template = chat_template_of(tokenizer)
    return lambda turns, prompt: tokenizer.apply_chat_template(turns, chat_template=template, tokenize=False,
                                                               add_generation_prompt=prompt)


@functools.cache
def _compiled_default_template():
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # transformers' own settings for chat templates

    return ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(DEFAULT_CHAT_TEMPLATE)


def _chat_template_segments(full: str, messages: list[dict], render, eos: str) -> Segments:
    """Segments by offsets: each assistant turn found by rendering the conversation up to it."""
    parts: Segments = []
    cursor = 0
    try:
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            start, end = len(render(messages[:i], True)), render(messages[:i + 1], False)
            if not full.startswith(end) or not cursor <= start <= len(end):
                return _searched_chat_segments(full, messages, eos)
            parts += [(full[cursor:start], False), (full[start:len(end)], True)]
            cursor = len(end)
    except Exception:  # noqa: BLE001 - templates may refuse partial conversations (e.g. an empty one)
        return _searched_chat_segments(full, messages, eos)
    parts.append((full[cursor:], False))
    return _merge([part for part in parts if part[0]])


def _searched_chat_segments(full: str, messages: list[dict], eos: str) -> Segments:
    """Fallback for templates that are not prefix-stable: find each assistant reply in order."""
    parts: Segments = []
    cursor = 0
    for message in messages:
        if message["role"] != "assistant":
            continue
        start = full.find(message["content"], cursor)
        if start < 0:
            continue
        end = start + len(message["content"])
        if eos and full.startswith(eos, end):
            end += len(eos)
        parts += [(full[cursor:start], False), (full[start:end], True)]
        cursor = end
    parts.append((full[cursor:], False))
    return _merge([part for part in parts if part[0]])


def _merge(parts: Segments) -> Segments:
    merged: Segments = []
    for text, counts in parts:
        if merged and merged[-1][1] == counts:
            merged[-1] = (merged[-1][0] + text, counts)
        else:
            merged.append((text, counts))
    return merged


def _ranges(parts: Segments) -> list[tuple[int, int]]:
    ranges, position = [], 0
    for text, counts in parts:
        if counts:
            ranges.append((position, position + len(text)))
        position += len(text)
    return ranges


def _tokenize(tokenizer, texts: list[str], laid_out: list[Segments], *, add_special_tokens: bool):
    """[(ids, character offsets)] per text. Slow tokenizers have no offsets: tokenize segment by segment."""
    if getattr(tokenizer, "is_fast", False):
        batch = tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                          return_attention_mask=False, return_token_type_ids=False, verbose=False)
        return list(zip(batch["input_ids"], batch["offset_mapping"]))
    results = []
    for parts in laid_out:
        ids, offsets, position = [], [], 0
        for text, _ in parts:
            piece = tokenizer(text, add_special_tokens=False)["input_ids"]
            ids += piece
            offsets += [(position, position + len(text))] * len(piece)
            position += len(text)
        if add_special_tokens:
            with_special = tokenizer.build_inputs_with_special_tokens(ids)
            prefix = with_special.index(ids[0]) if ids and ids[0] in with_special else 0
            offsets = [(0, 0)] * prefix + offsets + [(0, 0)] * (len(with_special) - prefix - len(ids))
            ids = with_special
        results.append((ids, offsets))
    return results


def _labels(ids: list[int], offsets, ranges: list[tuple[int, int]], train_on_prompt: bool) -> list[int]:
    if train_on_prompt:
        return list(ids)
    labels = [IGNORE_INDEX] * len(ids)
    r, count = 0, len(ranges)
    for position, (start, end) in enumerate(offsets):
        if end <= start:  # special tokens added by the tokenizer have no characters
            continue
        while r < count and ranges[r][1] <= start:
            r += 1
        if r == count:
            break
        if ranges[r][0] < end:
            labels[position] = ids[position]
    return labels
