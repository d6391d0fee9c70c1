"""Using a model: text generation (whole or streamed), classification, and loading base / adapter / merged models.

Generation is our own short sampling loop over the model's KV cache, not `model.generate`: it yields each token
as it is chosen (streaming needs no thread), and it samples with its own seeded torch.Generator, so the same
prompt, settings and seed give the same text whatever else uses torch's global RNG. The logits go through
transformers' processors in `model.generate`'s order: repetition penalty, temperature, top-k, top-p.
Temperature 0 means greedy. Generation stops at an EOS token (the generation config's or the tokenizer's), after
`max_new_tokens`, or at the model's context length. A prompt longer than `max_prompt_tokens` keeps its last tokens.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch

from trainer.config import GENERATION_DEFAULTS
from trainer.data.render import render_chat
from trainer.errors import ConfigError
from trainer.models import load_model, load_tokenizer

DEFAULT_MAX_PROMPT_TOKENS = 1024


def _check_settings(temperature, top_p, top_k, max_new_tokens, repetition_penalty, max_prompt_tokens) -> None:
    checks = [
        (temperature >= 0, "temperature must be 0 (greedy) or more", "temperature"),
        (0 < top_p <= 1, "top_p must be above 0 and at most 1", "top_p"),
        (isinstance(top_k, int) and top_k >= 0, "top_k must be a whole number, 0 for no limit", "top_k"),
        (isinstance(max_new_tokens, int) and max_new_tokens >= 1, "max_new_tokens must be at least 1",
         "max_new_tokens"),
        (repetition_penalty > 0, "repetition_penalty must be above 0 (1 means none)", "repetition_penalty"),
        (isinstance(max_prompt_tokens, int) and max_prompt_tokens >= 1, "max_prompt_tokens must be at least 1",
         "max_prompt_tokens"),
    ]
    for ok, message, field in checks:
        if not ok:
            raise ConfigError(message, field)


def logits_processors(temperature: float, top_p: float, top_k: int, repetition_penalty: float):
    from transformers.generation.logits_process import (LogitsProcessorList, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    processors = LogitsProcessorList()
    if repetition_penalty != 1.0:
        processors.append(RepetitionPenaltyLogitsProcessor(repetition_penalty))
    if temperature > 0:
        if temperature != 1.0:
            processors.append(TemperatureLogitsWarper(temperature))
        if top_k > 0:
            processors.append(TopKLogitsWarper(top_k))
        if top_p < 1.0:
            processors.append(TopPLogitsWarper(top_p))
    return processors


def _eos_ids(model, tokenizer) -> set[int]:
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())


def _context_length(model) -> int | None:
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return getattr(config, "max_position_embeddings", None)


def prompt_text(tokenizer, prompt: str | list[dict]) -> str:
    """The text a prompt is tokenized from: a text prompt itself, or chat messages rendered with the tokenizer's
    chat template plus the assistant's turn opener (`trainer.data.render.render_chat`, as in training)."""
    if isinstance(prompt, str):
        return prompt
    if not tokenizer.chat_template:
        raise ConfigError("this model's tokenizer has no chat template: send a plain text prompt", "prompt")
    return render_chat(tokenizer, prompt, add_generation_prompt=True)


def prompt_ids(tokenizer, prompt: str | list[dict], max_prompt_tokens: int) -> list[int]:
    """Token ids of `prompt_text` (a text prompt gets the tokenizer's special tokens, a chat template writes its
    own); only the last `max_prompt_tokens` are kept."""
    ids = tokenizer(prompt_text(tokenizer, prompt), add_special_tokens=isinstance(prompt, str))["input_ids"]
    if not ids:
        raise ConfigError("the prompt is empty", "prompt")
    return ids[-max_prompt_tokens:]


@contextlib.contextmanager
def _eval_mode(model):
    """Dropout off and no autograd for one forward, the caller's train/eval mode restored after.

    Entered per step, never across a `yield`, so a suspended stream leaves the caller's torch state alone."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def choose_token(scores: torch.Tensor, *, greedy: bool, generator: torch.Generator) -> int:
    """The argmax of processed scores (1, vocab), or a draw from their softmax.

    Drawn on the CPU with our own generator: the same draw on any device."""
    if greedy:
        return int(scores.argmax(-1))
    return int(torch.multinomial(scores.softmax(-1).cpu(), 1, generator=generator))


def sample_token_ids(model, ids: list[int], *, temperature: float, top_p: float, top_k: int,
                     max_new_tokens: int, repetition_penalty: float, seed: int, eos_ids: set[int]) -> Iterator[int]:
    """Yield new token ids one at a time (EOS ends the loop and is not yielded)."""
    processors = logits_processors(temperature, top_p, top_k, repetition_penalty)
    generator = torch.Generator().manual_seed(seed)
    context = _context_length(model)
    budget = max_new_tokens if context is None else min(max_new_tokens, context - len(ids))
    device = next(model.parameters()).device
    sequence = torch.tensor([ids], device=device)  # (1, tokens so far), seen by the repetition penalty
    step_input, cache = sequence, None
    for _ in range(max(budget, 0)):
        with _eval_mode(model):
            out = model(input_ids=step_input, past_key_values=cache, use_cache=True)
            cache = out.past_key_values
            scores = processors(sequence, out.logits[:, -1, :].float())  # (1, vocab)
            token = choose_token(scores, greedy=temperature == 0, generator=generator)
            step_input = torch.tensor([[token]], device=device)
            sequence = torch.cat([sequence, step_input], dim=1)
        if token in eos_ids:
            return
        yield token


def stream_generate(model, tokenizer, prompt: str | list[dict], *,
                    temperature: float = GENERATION_DEFAULTS["temperature"],
                    top_p: float = GENERATION_DEFAULTS["top_p"], top_k: int = GENERATION_DEFAULTS["top_k"],
                    max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"],
                    repetition_penalty: float = GENERATION_DEFAULTS["repetition_penalty"],
                    seed: int = GENERATION_DEFAULTS["seed"],
                    max_prompt_tokens: int = DEFAULT_MAX_PROMPT_TOKENS) -> Iterator[str]:
    """Yield the generated text in pieces as tokens are chosen (special tokens left out).

    A piece is held back while the text ends inside an unfinished UTF-8 character (byte-level tokenizers).
    Joined, the pieces are exactly what `generate` returns for the same arguments.
    """
    _check_settings(temperature, top_p, top_k, max_new_tokens, repetition_penalty, max_prompt_tokens)
    ids = prompt_ids(tokenizer, prompt, max_prompt_tokens)
    new_ids: list[int] = []
    shown = ""
    for token in sample_token_ids(model, ids, temperature=temperature, top_p=top_p, top_k=top_k,
                                  max_new_tokens=max_new_tokens, repetition_penalty=repetition_penalty,
                                  seed=seed, eos_ids=_eos_ids(model, tokenizer)):
        new_ids.append(token)
        text = tokenizer.decode(new_ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(shown) or text == shown:
            continue
        yield text[len(shown):]
        shown = text
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    if text.startswith(shown) and text != shown:
        yield text[len(shown):]


def generate(model, tokenizer, prompt: str | list[dict], **settings) -> str:
    """The generated text (without the prompt); settings as for `stream_generate`."""
    return "".join(stream_generate(model, tokenizer, prompt, **settings))


def classify(model, tokenizer, text: str, *, max_length: int = 512) -> dict[str, float]:
    """Probability of each label (names from the model's id2label), most likely first.

    The text is cut to `max_length` tokens."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("the text to classify is empty", "text")
    device = next(model.parameters()).device
    encoded = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt").to(device)
    with _eval_mode(model):
        probs = model(**encoded).logits[0].float().softmax(-1).tolist()
    labels = model.config.id2label
    ranked = sorted(range(len(probs)), key=lambda i: -probs[i])
    return {str(labels.get(i, f"LABEL_{i}")): probs[i] for i in ranked}


def folder_task(folder: str | Path) -> str:
    """The task of an adapter (its task_type) or of a model folder (see inspect_model.default_task)."""
    from transformers import AutoConfig

    from trainer.adapter_io import CONFIG_FILE, read_adapter_config
    from trainer.inspect_model import default_task

    if (Path(folder) / CONFIG_FILE).is_file():
        return "classification" if read_adapter_config(folder).get("task_type") == "SEQ_CLS" else "causal-lm"
    return default_task(AutoConfig.from_pretrained(str(folder)))


def adapter_tokenizer(adapter_dir: str | Path):
    """The tokenizer a training run saved next to its adapter (with the chat template it trained with), or None
    for an adapter folder without one (PEFT's, or one written before tokenizers were saved)."""
    if not (Path(adapter_dir) / "tokenizer_config.json").is_file():
        return None
    return load_tokenizer(adapter_dir)


def load_for_inference(model_name: str, *, task: str | None = None, adapter_dir: str | Path | None = None,
                       merged_dir: str | Path | None = None, device: str = "cpu", dtype=None):
    """(model, tokenizer) ready for `generate` / `classify`, in eval mode.

    - base: `model_name` alone;
    - base + adapter, unmerged: the base with the LoRA layers of `adapter_dir` (ours or PEFT's) applied, and the
      tokenizer saved in `adapter_dir` when there is one (else the base's);
    - merged: the folder `merged_dir` (a plain transformers model; `model_name` is then only a label).
    `task` None takes it from the adapter's task_type or the folder's architecture.
    """
    if adapter_dir is not None and merged_dir is not None:
        raise ConfigError("give an adapter folder or a merged model folder, not both", "adapter")
    if merged_dir is not None:
        model, tokenizer = load_model(str(merged_dir), task or folder_task(merged_dir), dtype=dtype, device=device)
        return model, tokenizer
    if adapter_dir is None:
        from trainer.models import resolve_model_path

        task = task or folder_task(resolve_model_path(model_name))
        return load_model(model_name, task, dtype=dtype, device=device)
    from trainer.adapter_io import load_adapter, read_label_mapping, saved_head_width

    task = task or folder_task(adapter_dir)
    id2label = read_label_mapping(adapter_dir) if task == "classification" else None
    num_labels = saved_head_width(adapter_dir) if task == "classification" and id2label is None else None
    model, tokenizer = load_model(model_name, task, id2label=id2label, num_labels=num_labels, dtype=dtype,
                                  device=device)
    tokenizer = adapter_tokenizer(adapter_dir) or tokenizer
    model = load_adapter(model, adapter_dir)
    model.eval()
    return model, tokenizer
