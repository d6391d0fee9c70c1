"""Generating for many requests in one batch, each row with its own adapter, sampling settings, seed and stops.

The rows' prompts are left-padded into one (B, T) batch with an attention mask and explicit position ids, so a
padded row sees exactly its own tokens at its own positions. Each step runs one forward pass of the base for all
rows (the adapters of `trainer.multi_lora.AdapterSet` applied per row) and picks each row's next token the way
`trainer.inference.sample_token_ids` does for one: the same logits processors and a torch.Generator seeded per
row, drawn on the CPU, so a row's tokens depend on its own prompt, settings and seed, not on its neighbours.
A row ends at one of its EOS ids ("stop"), after its token budget ("length"), or at a stop string (`TextStream`);
rows that ended are fed a pad token until the last row ends, and never yield again.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from trainer.config import GENERATION_DEFAULTS
from trainer.inference import (_check_settings, _context_length, _eval_mode, choose_token, logits_processors)


@dataclass
class Row:
    """One request row: prompt token ids, its adapter's name in the AdapterSet (None: the base), sampling."""

    ids: list[int]
    adapter: str | None = None
    eos_ids: set[int] = field(default_factory=set)
    temperature: float = GENERATION_DEFAULTS["temperature"]
    top_p: float = GENERATION_DEFAULTS["top_p"]
    top_k: int = GENERATION_DEFAULTS["top_k"]
    max_new_tokens: int = GENERATION_DEFAULTS["max_new_tokens"]
    repetition_penalty: float = GENERATION_DEFAULTS["repetition_penalty"]
    seed: int = GENERATION_DEFAULTS["seed"]
    finish_reason: str | None = None  # "stop" | "length", set when the row ends
    generated: int = 0

    def check(self) -> None:
        _check_settings(self.temperature, self.top_p, self.top_k, self.max_new_tokens, self.repetition_penalty,
                        max(len(self.ids), 1))


def left_padded(rows: list[Row], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask, position_ids), each (B, T): prompts right-aligned, positions from 0 per row."""
    width = max(len(row.ids) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, width - len(row.ids):] = torch.tensor(row.ids)
        mask[i, width - len(row.ids):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), positions.to(device)


def generate_rows(model, adapters, rows: list[Row], *, pad_id: int = 0) -> Iterator[list[tuple[int, int]]]:
    """Run `rows` together; each step yields [(row index, new token id)] for the rows still going.

    `adapters` is the AdapterSet on `model` (or None when no row has an adapter). Sets each row's
    `finish_reason` and `generated` as it ends; a caller may stop iterating early (e.g. at stop strings)."""
    for row in rows:
        row.check()
    processors = [logits_processors(r.temperature, r.top_p, r.top_k, r.repetition_penalty) for r in rows]
    generators = [torch.Generator().manual_seed(r.seed) for r in rows]
    context = _context_length(model)
    budgets = [r.max_new_tokens if context is None else min(r.max_new_tokens, context - len(r.ids)) for r in rows]
    device = next(model.parameters()).device
    step_input, mask, positions = left_padded(rows, pad_id, device)
    sequences = [torch.tensor([r.ids], device=device) for r in rows]  # (1, tokens so far): repetition penalty
    for i, row in enumerate(rows):
        if budgets[i] <= 0:
            row.finish_reason = "length"
    route = adapters.rows([r.adapter for r in rows]) if adapters is not None else contextlib.nullcontext()
    cache = None
    with route:
        while any(row.finish_reason is None for row in rows):
            with _eval_mode(model):
                out = model(input_ids=step_input, attention_mask=mask, position_ids=positions,
                            past_key_values=cache, use_cache=True)
                cache = out.past_key_values
                last = out.logits[:, -1, :].float()  # (B, vocab)
                chosen = []
                for i, row in enumerate(rows):
                    if row.finish_reason is not None:
                        continue
                    scores = processors[i](sequences[i], last[i:i + 1])
                    token = choose_token(scores, greedy=row.temperature == 0, generator=generators[i])
                    sequences[i] = torch.cat([sequences[i], torch.tensor([[token]], device=device)], dim=1)
                    if token in row.eos_ids:
                        row.finish_reason = "stop"
                        continue
                    row.generated += 1
                    if row.generated >= budgets[i]:
                        row.finish_reason = "length"
                    chosen.append((i, token))
            if chosen:
                yield chosen
            next_tokens = torch.full((len(rows), 1), pad_id, dtype=torch.long)
            for i, token in chosen:
                next_tokens[i, 0] = token
            step_input = next_tokens.to(device)
            mask = torch.cat([mask, torch.ones_like(step_input)], dim=1)
            positions = positions[:, -1:] + 1


class TextStream:
    """Turns one row's tokens into text pieces: holds back an unfinished UTF-8 character and any tail that may
    be the start of a stop string; at a stop string, ends the text just before it (`stopped` becomes True)."""

    def __init__(self, tokenizer, stop: list[str] | None = None):
        self.tokenizer, self.stop = tokenizer, [s for s in (stop or []) if s]
        self.ids: list[int] = []
        self.shown = ""
        self.stopped = False

    def feed(self, token: int) -> str:
        """The new text this token makes visible (maybe empty)."""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        cut = min((text.find(s) for s in self.stop if s in text), default=-1)
        if cut >= 0:
            self.stopped = True
            return self._show(text[:cut])
        if text.endswith("\ufffd"):
            return ""
        return self._show(text[:len(text) - self._maybe_stop_tail(text)])

    def finish(self) -> str:
        """Whatever was held back, once the row has ended without a stop string."""
        if self.stopped:
            return ""
        return self._show(self.tokenizer.decode(self.ids, skip_special_tokens=True))

    def _show(self, text: str) -> str:
        if not text.startswith(self.shown) or text == self.shown:
            return ""
        piece, self.shown = text[len(self.shown):], text
        return piece

    def _maybe_stop_tail(self, text: str) -> int:
        """The length of the longest end of `text` that a stop string begins with."""
        return max((n for s in self.stop for n in range(1, len(s)) if text.endswith(s[:n])), default=0)
