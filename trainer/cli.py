"""`python -m trainer`: inspect, validate, train, merge, generate and classify from a shell.

Every command prints one JSON document on stdout; progress and log lines go to stderr (a progress bar when
stderr is a terminal). Exit codes: 0 done, 1 `validate` found the file unusable, 2 a problem the message on
stderr explains (bad settings, missing model, unusable data, out of memory) or a usage error.
Heavy modules (torch, transformers) are imported inside the commands, so `--help` is instant.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from trainer.config import (DTYPE_CHOICES, GENERATION_DEFAULTS, METHODS, QUANTIZE_CHOICES, SCHEDULERS, TASKS,
                            LoraSettings, TrainConfig)
from trainer.errors import ConfigError, TrainerError

EXIT_UNUSABLE = 1
EXIT_ERROR = 2


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.command(args)
    except TrainerError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_ERROR


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="Loraworks LoRA fine-tuning engine.")
    commands = parser.add_subparsers(dest="name", required=True, metavar="COMMAND")

    inspect = commands.add_parser("inspect", help="architecture, linear layers and parameter counts of a model")
    inspect.add_argument("--model", required=True, help="local folder, Hugging Face id or built-in demo/... name")
    inspect.set_defaults(command=cmd_inspect)

    validate = commands.add_parser("validate", help="check a dataset row by row (exit 1 if unusable)")
    validate.add_argument("--data", required=True)
    validate.add_argument("--eval-data", help="a separate eval file, checked for labels unseen in training")
    validate.add_argument("--model", help="count tokens with this model's tokenizer (else estimated)")
    validate.add_argument("--task", choices=TASKS)
    validate.add_argument("--format", default="auto")
    validate.add_argument("--max-length", type=int, default=512)
    validate.set_defaults(command=cmd_validate)

    _add_train_parser(commands)

    merge = commands.add_parser("merge", help="fold an adapter into its base and write a plain HF model folder")
    merge.add_argument("--model", required=True)
    merge.add_argument("--adapter", required=True)
    merge.add_argument("--out", required=True)
    merge.add_argument("--quantize", choices=QUANTIZE_CHOICES, default="none",
                       help="how the base was quantized in training: nf4/int8 merge into that base dequantized to "
                            "its own dtype; default: none")
    merge.set_defaults(command=cmd_merge)

    generate = commands.add_parser("generate", help="generate text with a base model, optionally + adapter")
    generate.add_argument("--model", required=True)
    generate.add_argument("--adapter")
    generate.add_argument("--prompt", required=True)
    for name, value in GENERATION_DEFAULTS.items():
        generate.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value,
                              help=f"default: {value}")
    generate.set_defaults(command=cmd_generate)

    classify = commands.add_parser("classify", help="label probabilities for a text")
    classify.add_argument("--model", required=True)
    classify.add_argument("--adapter")
    classify.add_argument("--text", required=True)
    classify.set_defaults(command=cmd_classify)
    return parser


def _add_train_parser(commands) -> None:
    # Defaults are None here so TrainConfig / LoraSettings stay the one place that defines them; the help shows them.
    train = commands.add_parser("train", help="fine-tune a LoRA adapter; writes OUT/adapter, OUT/metrics.json")
    flag = _flag_with_default(train)
    train.add_argument("--model", required=True)
    train.add_argument("--data", required=True)
    train.add_argument("--out", required=True)
    train.add_argument("--task", choices=TASKS, help="default: the task of the data's format")
    flag("--method", choices=METHODS, help="sft: learn the answers; dpo: prefer chosen over rejected answers")
    flag("--beta", type=float, help="dpo: how close the tuned model stays to the base (higher: closer)")
    flag("--rpo-alpha", type=float, help="dpo: weight of an SFT term on the chosen answers (0: plain DPO)")
    flag("--format", help="auto | text | prompt_completion | alpaca | chat | classification | preference")
    flag("--eval-data", help="a separate eval file (instead of splitting off --eval-fraction)")
    flag("--eval-fraction", type=float)
    flag("--rank", type=int)
    flag("--alpha", type=float)
    flag("--dropout", type=float)
    flag("--targets", help="attention | attention+mlp | all-linear | NAME,NAME | re:REGEX")
    flag("--rslora", action="store_true")
    flag("--epochs", type=float)
    flag("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    flag("--batch-size", type=int)
    flag("--grad-accum", type=int)
    flag("--lr", type=float)
    flag("--warmup", type=float, help="fraction of the steps")
    flag("--scheduler", choices=SCHEDULERS)
    flag("--weight-decay", type=float)
    flag("--max-grad-norm", type=float)
    flag("--max-length", type=int)
    flag("--packing", action="store_true")
    flag("--train-on-prompt", action="store_true")
    flag("--gradient-checkpointing", action="store_true")
    flag("--eval-every", type=int, help="steps between evals during training; 0: before and after only")
    flag("--keep", choices=("auto", "best", "last"),
         help="the adapter saved: the best periodic eval's or the last step's (auto: best with --eval-every)")
    flag("--early-stopping-patience", type=int, help="stop after N periodic evals without improvement; 0: never")
    flag("--sample-answers", action="store_true",
         help="causal LM: answer the first 5 held-out prompts at step 0, every eval and the end (metrics.samples)")
    flag("--init-adapter", help="continue training this saved adapter folder (same base) instead of a new one")
    flag("--checkpoint-every", type=int, help="steps between checkpoints")
    flag("--device", choices=("auto", "cpu", "cuda", "mps"))
    flag("--quantize", choices=QUANTIZE_CHOICES,
         help="store the frozen base in 4-bit NF4 (QLoRA) or 8-bit through bitsandbytes")
    flag("--dtype", choices=DTYPE_CHOICES,
         help="the base's weight and compute dtype; auto: fp32 on CPU, bf16 on GPUs that have it, else fp16")
    flag("--seed", type=int)
    flag("--merge", action="store_true", help="also write OUT/merged")
    flag("--resume", action="store_true", help="continue from the newest checkpoint in OUT/checkpoints")
    # How the run is launched, not what it learns: not TrainConfig settings (see trainer.distributed).
    train.add_argument("--processes", type=int, default=1,
                       help="data-parallel: train on N processes (one per GPU, or CPU processes with gloo), each "
                            "on --batch-size rows, as one process with N x batch size would; default: 1")
    train.add_argument("--collective-timeout-s", type=float, default=None,
                       help="data-parallel: the longest a process waits for the others before the run stops; "
                            "default: 1800")
    train.set_defaults(command=cmd_train)


def config_default(name: str):
    """The default of setting `name` in TrainConfig, or in LoraSettings for the LoRA flags."""
    owner = LoraSettings if name in LORA_FLAGS else TrainConfig
    return next(f.default for f in dataclasses.fields(owner) if f.name == name)


def _flag_with_default(parser: argparse.ArgumentParser):
    """add_argument for a train flag: default None (unset), help ending in the config's default."""
    def add(flag: str, help: str | None = None, **kwargs):
        default = config_default(flag[2:].replace("-", "_"))
        shown = "off" if default is False else ("none" if default is None else default)
        text = f"{help}; default: {shown}" if help else f"default: {shown}"
        parser.add_argument(flag, default=None, help=text.replace("%", "%%"), **kwargs)
    return add


LORA_FLAGS = ("rank", "alpha", "dropout", "targets", "rslora")
LAUNCH_FLAGS = ("processes", "collective_timeout_s")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    given = {k: v for k, v in vars(args).items()
             if v is not None and k not in ("command", "name", *LAUNCH_FLAGS)}
    lora = LoraSettings(**{k: given.pop(k) for k in LORA_FLAGS if k in given})
    return TrainConfig(lora=lora, **given)


def _print_json(value) -> None:
    json.dump(value, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def cmd_inspect(args) -> int:
    from trainer.inspect_model import inspect

    _print_json(inspect(args.model))
    return 0


def cmd_validate(args) -> int:
    from trainer.data.validate import validate_file

    tokenizer = None
    if args.model:
        from trainer.models import load_tokenizer, resolve_model_path

        tokenizer = load_tokenizer(resolve_model_path(args.model))
    report = validate_file(args.data, format=args.format, task=args.task, tokenizer=tokenizer,
                           max_length=args.max_length, eval_path=args.eval_data)
    _print_json(report.to_dict())
    return 0 if report.usable else EXIT_UNUSABLE


def cmd_train(args) -> int:
    config = config_from_args(args)
    config.check()  # before importing torch: a bad setting fails at once
    if args.task is None:
        config.task = _task_of_data(config.data, config.format)
    from trainer import distributed
    from trainer.reporter import ConsoleReporter

    timeout_s = args.collective_timeout_s or distributed.DEFAULT_TIMEOUT_S
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # started by torchrun (or another launcher that sets the rendezvous variables): one rank of many
        if args.processes != 1:
            raise ConfigError("--processes starts the processes itself: leave it out under torchrun", "processes")
        rank = int(os.environ["RANK"])
        metrics = distributed.run_rank(config, ConsoleReporter() if rank == 0 else None, rank=rank, world=world,
                                       local_rank=int(os.environ.get("LOCAL_RANK", "0")), timeout_s=timeout_s)
        if rank == 0:
            _print_json(metrics)
        return 0
    _print_json(distributed.train_data_parallel(config, ConsoleReporter(), processes=args.processes,
                                                timeout_s=timeout_s))
    return 0


def _task_of_data(path: str, fmt: str) -> str:
    """classification for a classification file, else causal-lm (what the file's format can train)."""
    from trainer.data.formats import task_for_format
    from trainer.data.reader import open_rows
    from trainer.data.validate import checked_rows

    with open_rows(path) as stream:
        detected, _ = checked_rows(stream, fmt)
    return task_for_format(detected) if detected else "causal-lm"


def cmd_merge(args) -> int:
    from trainer.merge import merge_to_folder

    out = merge_to_folder(args.model, args.adapter, args.out, quantize=args.quantize)
    _print_json({"merged": str(out or args.out)})
    return 0


def cmd_generate(args) -> int:
    from trainer.inference import generate, load_for_inference

    model, tokenizer = load_for_inference(args.model, adapter_dir=args.adapter, task="causal-lm")
    text = generate(model, tokenizer, args.prompt, temperature=args.temperature, top_p=args.top_p,
                    top_k=args.top_k, max_new_tokens=args.max_new_tokens,
                    repetition_penalty=args.repetition_penalty, seed=args.seed)
    _print_json({"prompt": args.prompt, "text": text})
    return 0


def cmd_classify(args) -> int:
    from trainer.inference import classify, load_for_inference

    model, tokenizer = load_for_inference(args.model, adapter_dir=args.adapter, task="classification")
    probabilities = classify(model, tokenizer, args.text)
    best = max(probabilities, key=probabilities.get)
    _print_json({"text": args.text, "label": best, "probabilities": probabilities})
    return 0
