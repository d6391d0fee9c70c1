"""The settings of one fine-tuning job, as dataclasses with their defaults and range checks.

Pure Python (no torch) so the web process can validate a job's settings with the same rules as the engine.
"""
from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from trainer.errors import ConfigError

TASKS = ("causal-lm", "classification")
TARGET_PRESETS = ("attention", "attention+mlp", "all-linear")
SCHEDULERS = ("cosine", "linear")
METHODS = ("sft", "dpo")  # supervised fine-tuning, or Direct Preference Optimization (trainer.dpo)
KEEP = ("auto", "best", "last")  # auto: best when there are periodic evals on held-out data, else last
# How the frozen base is stored: as it is, or quantized by bitsandbytes (NF4 4-bit with double quantization, or
# LLM.int8 8-bit); trainer.quantized loads it. QLoRA's setting for 7-8B models on one 24 GB GPU is nf4.
QUANTIZE_CHOICES = ("none", "nf4", "int8")
# The base's weight (and compute) dtype. auto: fp32 on CPU and MPS, bf16 on a GPU that supports it, else fp16.
DTYPE_CHOICES = ("auto", "fp32", "bf16", "fp16")

MAX_RANK = 1024
MAX_SAMPLE_PROMPTS = 10
MAX_LENGTH_LIMIT = 32768
MAX_TARGET_REGEX_LENGTH = 200
# Sampling defaults of trainer.inference.stream_generate / generate and `python -m trainer generate`.
GENERATION_DEFAULTS = {"temperature": 0.7, "top_p": 0.95, "top_k": 50, "max_new_tokens": 128,
                       "repetition_penalty": 1.0, "seed": 0}


@dataclass
class LoraSettings:
    """How the adapter is shaped: rank r, scaling alpha/r (alpha/sqrt(r) with rsLoRA), where it goes."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    # A preset name, a comma-separated list of module-name suffixes, or "re:<regex>" on full module names.
    targets: str = "attention"
    rslora: bool = False

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.rank) if self.rslora else self.rank)

    def check(self) -> None:
        _require(isinstance(self.rank, int) and 1 <= self.rank <= MAX_RANK,
                 f"rank must be a whole number from 1 to {MAX_RANK}", "rank")
        _require(_finite(self.alpha) and 0 < self.alpha <= 100_000, "alpha must be a positive number", "alpha")
        _require(_finite(self.dropout) and 0 <= self.dropout < 1, "dropout must be at least 0 and below 1",
                 "dropout")
        _require(isinstance(self.targets, str) and self.targets.strip() != "", "targets must not be empty",
                 "targets")
        check_target_spec(self.targets)


@dataclass
class TrainConfig:
    """Everything `trainer.train` needs for one job. Paths are local files/folders."""

    model: str
    data: str
    out: str
    task: str = "causal-lm"
    method: str = "sft"
    beta: float = 0.1  # DPO: how far the policy may move from the reference (higher: closer to it)
    rpo_alpha: float = 0.0  # DPO: weight of an SFT term on the chosen answers (TRL's rpo_alpha); 0: plain DPO
    format: str = "auto"
    eval_data: str | None = None
    eval_fraction: float = 0.1
    lora: LoraSettings = field(default_factory=LoraSettings)
    epochs: float = 3.0
    max_steps: int | None = None  # overrides epochs when set
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    warmup: float = 0.03  # fraction of total steps
    scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_length: int = 512
    packing: bool = False
    train_on_prompt: bool = False
    gradient_checkpointing: bool = False
    seed: int = 0
    merge: bool = False
    resume: bool = False
    eval_every: int = 0  # steps; 0 = only before and after training
    keep: str = "auto"  # which adapter is saved: the best eval's (eval loss, accuracy for classification) or the last
    early_stopping_patience: int = 0  # stop after this many periodic evals without improvement; 0 = never
    # Causal LM: answer prompts at step 0, every periodic eval and the end (trainer.sample_answers): the
    # sample_prompts, or when empty the first 5 held-out prompts. Off by default in the library and CLI (it costs
    # a generation per prompt and checkpoint); the job form turns it on.
    sample_answers: bool = False
    # A saved adapter folder to continue training (SFT or DPO) instead of a fresh one; its rank, alpha, targets
    # and rsLoRA replace `lora`'s (dropout stays the job's). DPO's reference is still the base, adapter off.
    init_adapter: str | None = None
    sample_prompts: list[str] = field(default_factory=list)
    checkpoint_every: int = 50  # steps; a checkpoint is also written at the end and on stop
    device: str = "auto"  # auto | cpu | cuda | mps
    quantize: str = "none"  # none | nf4 | int8 (QUANTIZE_CHOICES)
    dtype: str = "auto"  # auto | fp32 | bf16 | fp16 (DTYPE_CHOICES); LoRA weights and optimizer state stay fp32
    column_mapping: dict[str, str] = field(default_factory=dict)  # {canonical field: column in the file}
    # The same for eval_data, a file with columns of its own; None: it is named like the training data.
    eval_column_mapping: dict[str, str] | None = None

    def check(self) -> None:
        """Raise ConfigError naming the first setting that is out of range."""
        _require(self.task in TASKS, f"task must be one of {', '.join(TASKS)}", "task")
        _require(isinstance(self.eval_every, int) and 0 <= self.eval_every <= 10_000_000,
                 "eval_every must be a whole number of steps, 0 or more", "eval_every")
        _require(self.keep in KEEP, f"keep must be one of {', '.join(KEEP)}", "keep")
        _require(isinstance(self.early_stopping_patience, int) and 0 <= self.early_stopping_patience <= 10_000,
                 "early_stopping_patience must be a whole number from 0 to 10000", "early_stopping_patience")
        _require(not self.early_stopping_patience or self.eval_every, "early stopping needs periodic evals: set "
                 "eval_every too", "early_stopping_patience")
        _require(isinstance(self.sample_prompts, list) and len(self.sample_prompts) <= MAX_SAMPLE_PROMPTS
                 and all(isinstance(p, str) and p.strip() for p in self.sample_prompts),
                 f"sample_prompts must be at most {MAX_SAMPLE_PROMPTS} non-empty texts", "sample_prompts")
        _require(self.method in METHODS, f"method must be one of {', '.join(METHODS)}", "method")
        _require(self.method != "dpo" or self.task == "causal-lm", "dpo trains causal language models only",
                 "method")
        _require(_finite(self.beta) and 0 < self.beta <= 100, "beta must be a number above 0 and at most 100",
                 "beta")
        _require(_finite(self.rpo_alpha) and 0 <= self.rpo_alpha <= 100,
                 "rpo_alpha must be a number from 0 to 100", "rpo_alpha")
        _require(not (self.method == "dpo" and self.packing), "dpo cannot pack examples: each answer is scored "
                 "after its own prompt", "packing")
        self.lora.check()
        _require(_finite(self.epochs) and 0 < self.epochs <= 1000, "epochs must be above 0 and at most 1000",
                 "epochs")
        _require(self.max_steps is None or (isinstance(self.max_steps, int) and 1 <= self.max_steps <= 10_000_000),
                 "max_steps must be a positive whole number", "max_steps")
        _require(isinstance(self.batch_size, int) and 1 <= self.batch_size <= 4096,
                 "batch_size must be from 1 to 4096", "batch_size")
        _require(isinstance(self.grad_accum, int) and 1 <= self.grad_accum <= 1024,
                 "grad_accum must be from 1 to 1024", "grad_accum")
        _require(_finite(self.lr) and 0 < self.lr <= 1, "lr must be a number above 0 and at most 1", "lr")
        _require(_finite(self.warmup) and 0 <= self.warmup < 1, "warmup is a fraction of steps, from 0 to below 1",
                 "warmup")
        _require(self.quantize in QUANTIZE_CHOICES,
                 f"quantize must be one of {', '.join(QUANTIZE_CHOICES)}, not {self.quantize!r}", "quantize")
        _require(self.dtype in DTYPE_CHOICES, f"dtype must be one of {', '.join(DTYPE_CHOICES)}, not {self.dtype!r}",
                 "dtype")
        _require(self.scheduler in SCHEDULERS, f"scheduler must be one of {', '.join(SCHEDULERS)}", "scheduler")
        _require(isinstance(self.max_length, int) and 8 <= self.max_length <= MAX_LENGTH_LIMIT,
                 f"max_length must be from 8 to {MAX_LENGTH_LIMIT}", "max_length")
        _require(_finite(self.eval_fraction) and 0 <= self.eval_fraction < 1,
                 "eval_fraction must be from 0 to below 1", "eval_fraction")
        _require(_finite(self.max_grad_norm) and self.max_grad_norm >= 0, "max_grad_norm must be 0 or more",
                 "max_grad_norm")
        _require(isinstance(self.seed, int) and 0 <= self.seed < 2**32, "seed must be a whole number from 0 to 2^32-1",
                 "seed")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}", sorted(unknown)[0])
        values = dict(data)
        if isinstance(values.get("lora"), dict):
            values["lora"] = LoraSettings(**values["lora"])
        return cls(**values)


def check_target_spec(spec: str) -> None:
    """For a "re:<regex>" targets spec: refuse one over MAX_TARGET_REGEX_LENGTH or one check_target_regex refuses.
    Other specs (presets, suffix lists) are plain string compares and need no check."""
    spec = spec.strip()
    if spec.startswith("re:"):
        _require(len(spec) <= MAX_TARGET_REGEX_LENGTH,
                 f"a target regex may be at most {MAX_TARGET_REGEX_LENGTH} characters", "targets")
        check_target_regex(spec[3:])


def check_target_regex(pattern: str) -> None:
    """Refuse a target regex that does not compile, or that nests one repetition inside another: such patterns
    ((a*)*, (?:.*.*)*) can take exponential time on a layer name, and they are matched in the web process."""
    try:
        parsed = re._parser.parse(pattern)
    except re.error as error:
        raise ConfigError(f"targets: {pattern!r} is not a valid regular expression: {error}", "targets") from None
    if _nested_repeat(parsed, inside_repeat=False):
        raise ConfigError("targets: the regex repeats a group that itself repeats (like (a*)*), which can take "
                          "forever to match; write it without the nested repetition", "targets")


def _nested_repeat(items, inside_repeat: bool) -> bool:
    for op, value in items:
        if op in (re._constants.MAX_REPEAT, re._constants.MIN_REPEAT, re._constants.POSSESSIVE_REPEAT):
            low, high, body = value
            if inside_repeat or _nested_repeat(body, inside_repeat=high > 1):
                return True
        elif op == re._constants.SUBPATTERN:
            if _nested_repeat(value[-1], inside_repeat):
                return True
        elif op == re._constants.BRANCH:
            if any(_nested_repeat(branch, inside_repeat) for branch in value[1]):
                return True
        elif op in (re._constants.ASSERT, re._constants.ASSERT_NOT):
            if _nested_repeat(value[1], inside_repeat):
                return True
    return False


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(ok: bool, message: str, field_name: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}", field_name)
