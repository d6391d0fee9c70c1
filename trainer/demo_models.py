"""The built-in demo causal LM ("demo/tiny-lm"): built reproducibly on this machine, never downloaded or committed.

Recipe (`build_tiny_lm`): a byte-level BPE tokenizer trained on the English help texts that ship with Python
(`pydoc_data.topics`), a small Llama-architecture model (≈1.1 M parameters, ≈4.3 MB in fp32 with the default
`DemoSpec`), pretrained for 200 steps of 16 windows of 64 tokens (about 200 k tokens, 1.6 passes over the
texts) of next-token prediction on the same texts, on one CPU thread: about 40 CPU seconds, so `./run.sh` has it
ready within a minute of starting. It writes somewhat English-looking text about Python; it knows nothing else. Its config carries `loraworks_demo: true` and a note, and
the folder has a README saying so, so it is labelled as a demo wherever it is shown.

Everything is seeded, single-process and single-threaded, so the same `DemoSpec` on the same machine (same Python,
whose help texts are the corpus, same torch) gives the same weights.

    python -m trainer.demo_models OUTDIR [--steps N]
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

DEMO_NOTE = ("Loraworks demo model: a tiny Llama-style LM pretrained for under a minute on Python's help texts. "
             "For trying the product without a GPU, not for real use.")
EOS = "<|end|>"
ROLE_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>")
# One turn per role token, each turn closed by EOS. The `generation` markers let
# `apply_chat_template(..., return_assistant_tokens_mask=True)` find the assistant's tokens.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|end|>' }}{% endif %}"
    "{{ '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


@dataclass(frozen=True)
class DemoSpec:
    """Size and training budget of the demo LM; tests use a much smaller one."""

    vocab_size: int = 2048
    hidden_size: int = 128
    layers: int = 4
    heads: int = 4
    intermediate_size: int = 352
    max_positions: int = 512
    seq_len: int = 64
    batch_size: int = 16
    steps: int = 200
    lr: float = 3e-3
    seed: int = 0
    text_chars: int | None = None  # use only the first N characters of the corpus (tests)


RECIPE_VERSION = 2  # bump when the recipe changes so cached builds are rebuilt


def corpus_text(limit: int | None = None) -> str:
    """Python's own help topics, in a fixed order: the pretraining and tokenizer corpus."""
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[key].strip() for key in sorted(topics))
    return text if limit is None else text[:limit]


def _documents(text: str) -> list[str]:
    return [doc for doc in text.split("\n\n") if doc.strip()]


def build_tokenizer(text: str, vocab_size: int):
    """Byte-level BPE trained on `text`, with EOS (also pad) and the chat role tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, *ROLE_TOKENS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(_documents(text), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS,
                                        additional_special_tokens=list(ROLE_TOKENS), model_max_length=512)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _token_stream(tokenizer, text: str) -> torch.Tensor:
    """All documents tokenized and joined, each followed by EOS: shape (n_tokens,)."""
    ids: list[int] = []
    for encoding in tokenizer.backend_tokenizer.encode_batch(_documents(text), add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


def build_model(spec: DemoSpec, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions, tie_word_embeddings=True,
        bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    config.loraworks_demo = True
    config.demo_note = DEMO_NOTE
    return LlamaForCausalLM(config)


def pretrain(model, tokens: torch.Tensor, spec: DemoSpec, log=None) -> float:
    """Next-token prediction on random windows of `tokens`; returns the mean loss of the last 10% of steps.

    `log(step, loss)`, when given, is called after every step (0-based) to follow the build."""
    generator = torch.Generator().manual_seed(spec.seed)
    # beta2 0.95 rather than 0.999: in a run this short the second moment must follow the gradients quickly.
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=spec.lr, total_steps=spec.steps,
                                                   pct_start=0.1)
    window = min(spec.seq_len, len(tokens) - 1)
    last_losses = []
    model.train()
    for step in range(spec.steps):
        starts = torch.randint(0, len(tokens) - window, (spec.batch_size,), generator=generator)
        batch = torch.stack([tokens[s:s + window + 1] for s in starts.tolist()])  # (batch, window + 1)
        loss = model(input_ids=batch, labels=batch).loss  # the model shifts labels by one itself
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if step >= spec.steps - max(1, spec.steps // 10):
            last_losses.append(loss.item())
        if log is not None:
            log(step, loss.item())
    model.eval()
    return sum(last_losses) / max(len(last_losses), 1)


def build_tiny_lm(out_dir: str | os.PathLike, spec: DemoSpec = DemoSpec(), log=None) -> Path:
    """Build the demo LM into `out_dir` (created; must not exist yet). Returns the folder.

    `log(step, loss)` follows the pretraining (see `pretrain`). It runs on one CPU thread whatever the machine: a
    job training beside it keeps the other cores, and the weights do not depend on the core count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _build(Path(out_dir), spec, log)
    finally:
        torch.set_num_threads(threads)


def _build(out: Path, spec: DemoSpec, log) -> Path:
    from transformers import GenerationConfig

    started = time.monotonic()
    torch.manual_seed(spec.seed)
    text = corpus_text(spec.text_chars)
    tokenizer = build_tokenizer(text, spec.vocab_size)
    model = build_model(spec, tokenizer)
    final_loss = pretrain(model, _token_stream(tokenizer, text), spec, log)
    model.generation_config = GenerationConfig(eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=True,
                                               temperature=0.8, top_p=0.95, max_new_tokens=64)
    out.mkdir(parents=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    build = {**asdict(spec), "recipe_version": RECIPE_VERSION, "final_train_loss": round(final_loss, 4),
             "build_seconds": round(time.monotonic() - started, 1), "torch": torch.__version__,
             "python": platform.python_version()}
    (out / "demo_build.json").write_text(json.dumps(build, indent=2) + "\n")
    (out / "README.md").write_text(f"# demo/tiny-lm\n\n{DEMO_NOTE}\n\nBuilt by `python -m trainer.demo_models`; "
                                   "see demo_build.json for the recipe.\n")
    return out


def ensure_tiny_lm(cache_dir: str | os.PathLike, spec: DemoSpec = DemoSpec(), log=None) -> Path:
    """The cached demo LM folder under `cache_dir`, built first if missing (`log` follows that build).

    Concurrent callers (a web worker and a training job) wait on a file lock; the folder appears only complete,
    by renaming a finished temporary build into place.
    """
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / f"tiny-lm-v{RECIPE_VERSION}"
    if (target / "config.json").is_file():
        return target
    with open(cache / ".tiny-lm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as scratch:
                built = build_tiny_lm(Path(scratch) / "model", spec, log)
                if target.exists():
                    shutil.rmtree(target)
                os.replace(built, target)
    return target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m trainer.demo_models", description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", help="folder to create (must not exist)")
    parser.add_argument("--steps", type=int, default=DemoSpec.steps, help="pretraining steps")
    args = parser.parse_args(argv)
    def log(step: int, loss: float) -> None:
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step + 1} of {args.steps}: loss {loss:.3f}", file=sys.stderr, flush=True)

    out = build_tiny_lm(args.out_dir, DemoSpec(steps=args.steps), log)
    print(json.loads((out / "demo_build.json").read_text()))


if __name__ == "__main__":
    main()
