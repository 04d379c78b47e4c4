"""The one-trial engine: GPU options on CPU, checkpoints, resume after SIGKILL, corrupt checkpoints.

Real tiny trials (ResNet-50 tiny, digits at 16 px, 3 steps an epoch); the SIGKILL test runs the
trial in a child Python process and kills it after its first checkpoint.
"""
from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from bocb.checkpoint import FORMAT, MAGIC, load_checkpoint, save_checkpoint
from bocb.engine import EpochRecord, Runtime, Trial, run_trial, start_trial, train
from bocb.recipes import resolve_recipe
from bocb.spec import DatasetSpec, TrialConfig

torch.set_num_threads(1)


def trial_config(recipe: str = "torch", epochs: int = 3, precision: str = "fp32", **overrides: object) -> TrialConfig:
    return TrialConfig(
        dataset=DatasetSpec(name="digits", image_size=16, train_subset=256, test_subset=64), backbone="resnet50",
        size="tiny", image_size=16, optimizer="sgd", lr=0.05, weight_decay=5e-4,
        recipe=resolve_recipe(recipe, overrides) | {"epochs": epochs, "batch_size": 64}, epochs=epochs,
        batch_size=64, seed=0, precision=precision,
    )


# DeiT's recipe draws from every random source a resume must restore: RandAugment and erasing
# (seeded per epoch), Mixup/CutMix (NumPy), drop path (torch), and it keeps an EMA.
RESUMABLE = trial_config("deit", warmup_epochs=1)


def without_time(records: list[EpochRecord]) -> list[dict]:
    return [{k: v for k, v in asdict(r).items() if k != "time_s"} for r in records]


def assert_same_weights(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def uninterrupted() -> Trial:
    torch.set_flush_denormal(True)  # as run_trial does, so in-process and child runs compute alike
    trial, resumed = start_trial(RESUMABLE, Runtime())
    assert resumed is None and train(trial) == "done"
    return trial


# --- GPU options on CPU -------------------------------------------------------------------------

def test_channels_last_and_bf16_autocast_reach_the_forward_pass() -> None:
    trial = Trial(trial_config(precision="bf16"), Runtime(channels_last=True))
    conv = trial.model.conv1
    seen: list[tuple[bool, torch.dtype]] = []
    conv.register_forward_hook(
        lambda m, args, out: seen.append((args[0].is_contiguous(memory_format=torch.channels_last), out.dtype)))
    assert trial.model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    loss = trial.train_epoch(0, steps=2)
    assert loss is not None and 0 < loss < 10
    assert seen == [(True, torch.bfloat16)] * 2
    top1, top5 = trial.accuracy(trial.model, trial.loaders.test)
    assert seen[-1] == (True, torch.bfloat16) and 0 <= top1 <= top5 <= 100


def test_a_whole_trial_runs_with_channels_last_and_bf16_on_cpu() -> None:
    outcome = run_trial(trial_config(epochs=2, precision="bf16"), Runtime(channels_last=True, layer_table=False))
    assert outcome.state == "done", outcome.error
    assert [r.epoch for r in outcome.epochs] == [0, 1]
    assert outcome.provenance["channels_last"] and outcome.provenance["precision"] == "bf16"


def test_compile_wraps_the_training_forward_only() -> None:
    trial = Trial(trial_config(), Runtime(compile=True))  # compiled lazily: nothing runs here
    assert isinstance(trial.forward, torch._dynamo.eval_frame.OptimizedModule)
    assert trial.forward._orig_mod is trial.model


# --- checkpoints --------------------------------------------------------------------------------

def test_resumed_trial_ends_bitwise_equal_to_an_uninterrupted_one(tmp_path: Path, uninterrupted: Trial) -> None:
    ckpt = tmp_path / "trial.pt"
    runtime = Runtime(checkpoint_path=ckpt, checkpoint_every=1, layer_table=False)

    def stop_after_epoch_1(record: EpochRecord) -> None:
        if record.epoch == 1:
            raise KeyboardInterrupt  # after epoch 1 is trained, before its checkpoint is written

    with pytest.raises(KeyboardInterrupt):
        train(start_trial(RESUMABLE, runtime)[0], stop_after_epoch_1)
    resumed, start = start_trial(RESUMABLE, runtime)
    assert start == 1  # the checkpoint written after epoch 0
    assert train(resumed) == "done"
    assert_same_weights(resumed.model, uninterrupted.model)
    assert_same_weights(resumed.ema.module, uninterrupted.ema.module)
    assert resumed.handle.optimizer.state_dict()["state"].keys() == \
        uninterrupted.handle.optimizer.state_dict()["state"].keys()
    assert without_time(resumed.records) == without_time(uninterrupted.records)


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from bocb.engine import Runtime, run_trial
    from test_engine import RESUMABLE

    def report(record):
        print("epoch", record.epoch, record.train_loss, flush=True)
        time.sleep(0.3)  # widen the window between checkpoints for the killer

    runtime = Runtime(checkpoint_path=Path(sys.argv[1]), checkpoint_every=1, layer_table=False)
    outcome = run_trial(RESUMABLE, runtime, on_epoch=report)
    print("state", outcome.state, outcome.error, flush=True)
    print("resumed", outcome.resumed_from_epoch, flush=True)
    print("recorded", *[r.epoch for r in outcome.epochs], flush=True)
""")


def child(ckpt: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(ckpt)], stdout=subprocess.PIPE, text=True, env=env)


def lines(out: str, word: str) -> list[list[str]]:
    return [line.split()[1:] for line in out.splitlines() if line.startswith(word + " ")]


@pytest.mark.slow
def test_sigkilled_trial_resumes_from_its_last_checkpoint(tmp_path: Path, uninterrupted: Trial) -> None:
    ckpt = tmp_path / "trial.pt"
    first = child(ckpt)
    deadline = time.monotonic() + 300
    while not ckpt.exists():
        assert first.poll() is None, "the trial ended before writing a checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)
    before, _ = first.communicate()
    assert first.returncode == -signal.SIGKILL
    saved_epoch = load_checkpoint(ckpt, RESUMABLE.key())["epoch"]
    assert 1 <= saved_epoch < RESUMABLE.epochs

    second = child(ckpt)
    after, _ = second.communicate(timeout=300)
    assert second.returncode == 0
    assert lines(after, "state") == [["done", "None"]]
    assert lines(after, "resumed") == [[str(saved_epoch)]]
    epochs_before = [int(e) for e, _ in lines(before, "epoch")]
    epochs_after = [int(e) for e, _ in lines(after, "epoch")]
    # The killed run reported epochs up to the checkpoint (perhaps one more, re-run after the resume);
    # the resumed run reports the rest, and the outcome holds every epoch once.
    assert epochs_before[:saved_epoch] == list(range(saved_epoch))
    assert epochs_after == list(range(saved_epoch, RESUMABLE.epochs))
    assert lines(after, "recorded") == [[str(e) for e in range(RESUMABLE.epochs)]]
    # ...and the losses are those of the uninterrupted run, to the last bit.
    losses = {int(e): float(loss) for e, loss in lines(before, "epoch") + lines(after, "epoch")}
    assert losses == {r.epoch: r.train_loss for r in uninterrupted.records}


def corrupt_by_truncation(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_by_garbage(path: Path) -> None:
    path.write_bytes(b"\x80\x04not a checkpoint at all")


class _Touch:
    """A pickle that creates a file when unpickled: what a weights-only load must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def corrupt_by_code(path: Path) -> None:
    """A pickle that runs code, behind a header whose digest matches: the weights-only load must refuse it."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "payload": _Touch(path.with_suffix(".pwned"))}, buffer)
    payload = buffer.getvalue()
    path.write_bytes(MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload)


def corrupt_by_random_bytes(path: Path) -> None:
    """A few random bytes written into the middle (a bad disk, a partial copy): still a loadable zip, maybe,
    but not the state that was saved."""
    blob = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for offset in rng.integers(len(blob) // 2, len(blob) - 64, size=4):
        blob[offset] ^= 0xFF
    path.write_bytes(bytes(blob))


def retarget_to_another_trial(path: Path) -> None:
    state = load_checkpoint(path, RESUMABLE.key())
    save_checkpoint(path, {**state, "trial": "someone-else"})


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's remark on the garbage bytes
@pytest.mark.parametrize("damage", [corrupt_by_truncation, corrupt_by_garbage, corrupt_by_code,
                                    corrupt_by_random_bytes, retarget_to_another_trial])
def test_a_bad_checkpoint_is_discarded_and_the_trial_restarts_cleanly(tmp_path: Path, damage,
                                                                      uninterrupted: Trial) -> None:
    ckpt = tmp_path / "trial.pt"
    runtime = Runtime(checkpoint_path=ckpt, checkpoint_every=1, layer_table=False)
    trial, _ = start_trial(RESUMABLE, runtime)
    trial.train_epoch(0)
    trial.records.append(trial.evaluate(0, 1.0, 0.0))
    save_checkpoint(ckpt, trial.state())
    damage(ckpt)

    reported: list[int] = []
    outcome = run_trial(RESUMABLE, runtime, on_epoch=lambda r: reported.append(r.epoch))
    assert outcome.state == "done", outcome.error
    assert outcome.resumed_from_epoch is None
    assert reported == [r.epoch for r in outcome.epochs] == list(range(RESUMABLE.epochs))
    assert without_time(outcome.epochs) == without_time(uninterrupted.records)  # nothing leaked in
    assert not ckpt.with_suffix(".pwned").exists()


def test_a_checkpoint_that_does_not_fit_the_model_restarts_cleanly(tmp_path: Path) -> None:
    ckpt = tmp_path / "trial.pt"
    config = trial_config(epochs=2)
    state = Trial(config, Runtime()).state()
    state["model"] = {k: v[..., :1] if v.dim() == 4 else v for k, v in state["model"].items()}  # wrong shapes
    save_checkpoint(ckpt, state)
    trial, resumed = start_trial(config, Runtime(checkpoint_path=ckpt))
    assert resumed is None and trial.start_epoch == 0 and not ckpt.exists()


def test_checkpoint_write_is_atomic_and_clears_writers_killed_mid_write(tmp_path: Path) -> None:
    ckpt = tmp_path / "trial.pt"
    save_checkpoint(ckpt, {"trial": "k", "epoch": 1, "model": {}, "optimizer": {}, "rng": {}})
    stale = tmp_path / ".trial.pt.12345.tmp"  # what a writer SIGKILLed before its rename leaves
    stale.write_bytes(b"half a checkpoint")
    assert load_checkpoint(ckpt, "k")["epoch"] == 1  # the previous checkpoint is whole
    save_checkpoint(ckpt, {"trial": "k", "epoch": 2, "model": {}, "optimizer": {}, "rng": {}})
    assert load_checkpoint(ckpt, "k")["epoch"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial.pt"]


def test_no_checkpoint_after_the_last_epoch_and_none_without_a_path(tmp_path: Path) -> None:
    ckpt = tmp_path / "trial.pt"
    outcome = run_trial(trial_config(epochs=1), Runtime(checkpoint_path=ckpt, layer_table=False))
    assert outcome.state == "done" and not ckpt.exists()


def test_channels_last_stays_off_where_torchs_cpu_kernels_would_crash() -> None:
    # RepVGG's stem has a 1x1 stride-2 conv on 3 channels: its channels-last CPU backward corrupts the heap.
    config = trial_config(epochs=1).model_copy(update={"backbone": "repvgg_a1"})
    trial = Trial(config, Runtime(channels_last=True))
    assert not trial.channels_last
    assert trial.train_epoch(0, steps=1) is not None
    assert Trial(trial_config(epochs=1), Runtime(channels_last=True)).channels_last


def test_schedule_free_evaluates_with_batchnorm_statistics_of_its_averaged_weights() -> None:
    config = trial_config(epochs=1).model_copy(update={"optimizer": "adamw_schedulefree", "lr": 2e-3,
                                                       "weight_decay": 0.0})
    trial = Trial(config, Runtime())
    trial.train_epoch(0)
    bn = trial.model.bn1  # the stem's BatchNorm
    gathered_in_training = bn.running_mean.clone()
    trial.evaluate(0, 0.0, 0.0)  # the handle is now in eval mode: the model holds the averaged weights
    evaluated_with = bn.running_mean.clone()
    batch_means = []
    hook = bn.register_forward_hook(lambda module, inputs, output: batch_means.append(inputs[0].mean((0, 2, 3))))
    with torch.no_grad():
        trial.model.train()
        for x, _ in trial.loaders.train:  # 4 batches, all of which the re-estimate averaged
            trial.model(x)
    hook.remove()
    torch.testing.assert_close(evaluated_with, torch.stack(batch_means).mean(0))
    assert not torch.allclose(evaluated_with, gathered_in_training, atol=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_cannot_run_fails_the_trial_not_the_worker() -> None:
    outcome = run_trial(RESUMABLE, Runtime(device="cuda", layer_table=False))
    assert outcome.state == "failed" and outcome.error.startswith("RuntimeError") and outcome.epochs == []
