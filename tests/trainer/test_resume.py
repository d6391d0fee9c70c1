import json
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from trainer.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from trainer.config import LoraSettings, TrainConfig
from trainer.errors import ConfigError
from trainer.reporter import NullReporter
from trainer.schedule import make_scheduler
from trainer.train import train


def _setup(scramble=False):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Linear(4, 1))
    model[0].weight.requires_grad_(False)  # a frozen base tensor is not part of the checkpoint
    if scramble:  # what a fresh run has before the checkpoint is loaded: other trainable values and RNG
        torch.manual_seed(99)
        for param in model.parameters():
            if param.requires_grad:
                torch.nn.init.normal_(param)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    return model, optimizer, make_scheduler(optimizer, "cosine", 10, 2)


def _step(model, optimizer, scheduler):
    loss = model(torch.randn(3, 4)).pow(2).mean()
    loss.backward()
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()


def test_checkpoint_restores_weights_optimizer_schedule_and_every_rng(tmp_path):
    model, optimizer, scheduler = _setup()
    for _ in range(3):
        _step(model, optimizer, scheduler)
    save_checkpoint(tmp_path, 3, model, optimizer, scheduler, position={"epoch": 0, "batch": 3},
                    history=[{"step": 3, "loss": 1.5, "lr": 0.1}], extra={"base_eval": {"eval_loss": 2.0}})
    expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())
    for _ in range(2):
        _step(model, optimizer, scheduler)
    expected = [p.detach().clone() for p in model.parameters()]

    resumed, resumed_opt, resumed_sched = _setup(scramble=True)
    restored = load_checkpoint(latest_checkpoint(tmp_path), resumed, resumed_opt, resumed_sched)
    assert restored["position"] == {"epoch": 0, "batch": 3}
    assert restored["history"] == [{"step": 3, "loss": 1.5, "lr": 0.1}]
    assert restored["extra"]["base_eval"] == {"eval_loss": 2.0}
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_draws
    for _ in range(2):
        _step(resumed, resumed_opt, resumed_sched)
    trainable = [i for i, p in enumerate(model.parameters()) if p.requires_grad]
    for i in trainable:
        torch.testing.assert_close(list(resumed.parameters())[i], expected[i])


def test_only_the_newest_checkpoints_are_kept_and_partial_ones_ignored(tmp_path):
    model, optimizer, scheduler = _setup()
    for step in (5, 10, 15):
        save_checkpoint(tmp_path, step, model, optimizer, scheduler, position={}, history=[], keep=2)
    (tmp_path / "step-000020").mkdir()  # a folder without state.pt is not a checkpoint
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000010", "step-000015"]
    assert latest_checkpoint(tmp_path).name == "step-000015"
    assert latest_checkpoint(tmp_path / "missing") is None


def test_loading_a_checkpoint_for_other_trainable_tensors_is_a_config_error(tmp_path):
    model, optimizer, scheduler = _setup()
    folder = save_checkpoint(tmp_path, 1, model, optimizer, scheduler, position={}, history=[])
    other, other_opt, other_sched = _setup()
    other[0].weight.requires_grad_(True)
    with pytest.raises(ConfigError, match="different LoRA settings"):
        load_checkpoint(folder, other, other_opt, other_sched)


class _StopAfter(NullReporter):
    def __init__(self, steps):
        self.steps, self.seen = steps, 0

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s):
        self.seen = step

    def should_stop(self):
        return self.seen >= self.steps


def _prompt_data(path):
    words = ["red", "blue", "green", "gold", "pink", "gray", "teal", "navy", "plum"]
    rows = [{"prompt": f"Say {w}:", "completion": f" {w} and {w}"} for w in words] * 2
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.parametrize("grad_accum", [1, 2])
def test_stopping_then_resuming_gives_the_same_adapter_as_training_straight_through(tmp_path, tiny_llama_dir,
                                                                                   grad_accum):
    data = _prompt_data(tmp_path / "data.jsonl")

    def config(out, **overrides):
        # 16 train rows, batches of 4: 4 batches an epoch, so 7 steps cross epochs; dropout draws from the RNG.
        return TrainConfig(model=str(tiny_llama_dir), data=str(data), out=str(tmp_path / out), max_steps=7,
                           batch_size=4, grad_accum=grad_accum, lr=1e-2, eval_fraction=0.1, checkpoint_every=0,
                           lora=LoraSettings(rank=4, dropout=0.2), **overrides)

    straight = train(config("straight"))
    stopped = train(config("parts"), _StopAfter(3))
    assert stopped["status"] == "stopped" and stopped["steps"] == 3
    # The stopped run keeps its step-3 adapter (to download or continue); the resumed run replaces it.
    at_stop = load_file(str(tmp_path / "parts" / "adapter" / "adapter_model.safetensors"))
    resumed = train(config("parts", resume=True))

    assert resumed["status"] == "completed" and resumed["resumed_from_step"] == 3
    assert [h["step"] for h in resumed["history"]] == list(range(1, 8))
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in straight["history"]],
                                                                     rel=1e-5)
    assert resumed["train_tokens"] == straight["train_tokens"]
    expected = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    got = load_file(str(tmp_path / "parts" / "adapter" / "adapter_model.safetensors"))
    assert set(got) == set(expected) == set(at_stop)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(at_stop[key], got[key]) for key in got)  # four more steps changed it
    assert any(expected[key].abs().sum() > 0 for key in expected if "lora_B" in key)  # it did train


def test_resuming_with_a_different_number_of_steps_is_refused(tmp_path, tiny_llama_dir):
    data = _prompt_data(tmp_path / "data.jsonl")
    base = dict(model=str(tiny_llama_dir), data=str(data), out=str(tmp_path / "run"), batch_size=4,
                lora=LoraSettings(rank=2))
    train(TrainConfig(max_steps=2, **base), _StopAfter(1))
    with pytest.raises(ConfigError, match="resume"):
        train(TrainConfig(max_steps=5, resume=True, **base))


def test_a_checkpoint_round_trips_the_fp16_grad_scaler_state(tmp_path):
    model, optimizer, scheduler = _setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
    for poison in (False, True, False):  # an inf gradient halves the scale; clean steps count toward growth
        loss = model(torch.randn(3, 4)).pow(2).mean() * (float("inf") if poison else 1.0)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
    saved = scaler.state_dict()
    assert saved["scale"] == 2.0**9 and saved["_growth_tracker"] == 1
    folder = save_checkpoint(tmp_path, 3, model, optimizer, scheduler, position={}, history=[], scaler=scaler)

    fresh = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_interval=2000)
    resumed, resumed_opt, resumed_sched = _setup(scramble=True)
    load_checkpoint(folder, resumed, resumed_opt, resumed_sched, fresh)
    assert fresh.state_dict() == saved
    # A checkpoint written without a scaler leaves a given scaler as it is.
    plain = save_checkpoint(tmp_path, 4, model, optimizer, scheduler, position={}, history=[])
    untouched = torch.amp.GradScaler("cpu", init_scale=8.0)
    load_checkpoint(plain, resumed, resumed_opt, resumed_sched, untouched)
    assert untouched.get_scale() == 8.0


class _Crash(Exception):
    """Stands in for a worker dying mid-run: no stop request, no final checkpoint."""


class _CrashAt(NullReporter):
    def __init__(self, step):
        self.step = step

    def on_step(self, step, total_steps, loss, lr, tokens_per_s, eta_s):
        if step == self.step:
            raise _Crash(step)


def test_resuming_after_a_crash_continues_from_the_last_periodic_checkpoint_like_a_straight_run(
        tmp_path, tiny_llama_dir):
    data = _prompt_data(tmp_path / "data.jsonl")

    def config(out, **overrides):
        return TrainConfig(model=str(tiny_llama_dir), data=str(data), out=str(tmp_path / out), max_steps=7,
                           batch_size=4, lr=1e-2, eval_fraction=0.1, checkpoint_every=3,
                           lora=LoraSettings(rank=4, dropout=0.2), **overrides)

    straight = train(config("straight"))
    with pytest.raises(_Crash):
        train(config("crashed"), _CrashAt(5))  # after the periodic checkpoint at step 3, before the one at 6
    assert [p.name for p in list_checkpoints(tmp_path / "crashed" / "checkpoints")] == ["step-000003"]
    resumed = train(config("crashed", resume=True))
    assert resumed["resumed_from_step"] == 3 and resumed["steps"] == 7
    _assert_same_training(resumed, straight, tmp_path / "crashed", tmp_path / "straight", rtol=1e-5, atol=1e-6)


def _assert_same_training(resumed: dict, straight: dict, resumed_out, straight_out, *, rtol, atol) -> None:
    """Same per-step losses and the same saved adapter."""
    assert [h["loss"] for h in resumed["history"]] == pytest.approx([h["loss"] for h in straight["history"]],
                                                                     rel=rtol)
    expected = load_file(str(straight_out / "adapter" / "adapter_model.safetensors"))
    got = load_file(str(resumed_out / "adapter" / "adapter_model.safetensors"))
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=rtol, atol=atol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_mixed_precision_training_resumes_like_a_straight_run(tmp_path, tiny_llama_dir, monkeypatch,
                                                                   precision):
    if precision == "fp16":  # what a GPU without bf16 gets: fp16 autocast with a GradScaler
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    elif not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    data = _prompt_data(tmp_path / "data.jsonl")

    def config(out, **overrides):
        return TrainConfig(model=str(tiny_llama_dir), data=str(data), out=str(tmp_path / out), max_steps=7,
                           batch_size=4, lr=1e-2, eval_fraction=0.1, checkpoint_every=0, device="cuda",
                           lora=LoraSettings(rank=4, dropout=0.2), **overrides)

    straight = train(config("straight"))
    assert straight["device"] == "cuda"
    train(config("parts"), _StopAfter(3))
    state = torch.load(tmp_path / "parts" / "checkpoints" / "step-000003" / "state.pt", weights_only=True)
    if precision == "fp16":
        assert state["scaler"]["scale"] > 0
    else:
        assert state["scaler"] is None
    resumed = train(config("parts", resume=True))
    assert resumed["resumed_from_step"] == 3
    _assert_same_training(resumed, straight, tmp_path / "parts", tmp_path / "straight", rtol=1e-4, atol=1e-5)
