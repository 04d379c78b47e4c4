"""End to end on real digits: a tiny benchmark, resume after SIGKILL, divergence."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import bocb_main, write_spec

from bocb.store import Store


@pytest.mark.slow
def test_tiny_benchmark_end_to_end(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path / "spec.yaml")
    code, out, err = bocb_main("run", str(spec), "--out", str(tmp_path / "out"), "--workers", "2", "--no-report",
                               capsys=capsys)
    assert code == 0, err
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 4 and set(results["state"]) == {"done"}
    assert set(zip(results["backbone"], results["optimizer"])) == {
        ("resnet50", "sgd"), ("resnet50", "adamw"), ("deit_s", "sgd"), ("deit_s", "adamw")}
    assert results["val_top1"].between(0, 100).all() and results["test_top1"].between(0, 100).all()
    assert results["time_s"].gt(0).all() and results["peak_mem_mb"].notna().all()
    sgd = results[results["optimizer"] == "sgd"].iloc[0]
    assert sgd["optimizer_class"] == "torch.optim.sgd.SGD" and sgd["optimizer_library"] == "torch.optim"
    assert results["torch_version"].notna().all() and (results["device"] == "cpu").all()
    assert results["seed"].eq(0).all() and "git_commit" in results
    store = Store(tmp_path / "out" / "bocb.db")
    epochs = store.epochs_frame()
    assert epochs.groupby("trial_key")["epoch"].apply(list).map(lambda e: e == [0, 1]).all()
    assert len(store.layers_frame()) > 0  # each finished trial stored its layer table
    # the printed matrix: optimizers as rows, backbones as columns, every cell filled
    table = out[out.index("optimizer"):].splitlines()
    assert table[0].split() == ["resnet50", "deit_s"] or "resnet50" in out.splitlines()[1]
    assert any(line.startswith("sgd") and len(line.split()) == 3 for line in out.splitlines())
    # running it again runs nothing new
    code, out2, _ = bocb_main("run", str(spec), "--out", str(tmp_path / "out"), "--no-report", capsys=capsys)
    assert code == 0 and store.trials_frame()["attempts"].eq(1).all()


def _finished(db: Path) -> pd.DataFrame:
    return _query(db, "SELECT key, state, finished_at, attempts FROM trials")


def _query(db: Path, sql: str) -> pd.DataFrame:
    """Read the store of a process under test without creating anything in it."""
    if not db.exists():
        return pd.DataFrame()
    engine = sa.create_engine(f"sqlite:///{db}")
    try:
        with engine.connect() as conn:
            return pd.read_sql(sql, conn)
    except (sa.exc.OperationalError, pd.errors.DatabaseError):  # tables not created yet, or a write holds the lock
        return pd.DataFrame()
    finally:
        engine.dispose()


@pytest.mark.slow
def test_sigkill_mid_sweep_then_resume(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["sgd", "adamw", "adam"],
                      epochs=1, search={"lr_points": 2, "wd_points": 1})
    out, db = tmp_path / "out", tmp_path / "out" / "bocb.db"
    run = subprocess.Popen([sys.executable, "-m", "bocb", "run", str(spec), "--out", str(out), "--workers", "1",
                            "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline:
        if (_finished(db).get("state", pd.Series(dtype=str)) == "done").sum() >= 2:
            break
        time.sleep(0.5)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    time.sleep(1.0)  # the orphaned worker dies with its parent (PR_SET_PDEATHSIG)
    before = _finished(db)
    done_before = before[before["state"] == "done"].set_index("key")
    assert 2 <= len(done_before) < 6, "the kill must land mid-sweep"
    code, _, err = bocb_main("run", str(spec), "--out", str(out), "--workers", "1", "--no-report", capsys=capsys)
    assert code == 0, err
    after = _finished(db).set_index("key")
    assert len(after) == 6 and after.index.is_unique and set(after["state"]) == {"done"}
    # finished trials were not re-run: same finish time, one attempt
    assert (after.loc[done_before.index, "finished_at"] == done_before["finished_at"]).all()
    assert after.loc[done_before.index, "attempts"].eq(1).all()


@pytest.mark.slow
def test_two_phase_search_resumes_after_sigkill_in_its_second_phase(tmp_path: Path, capsys) -> None:
    """Killed after the lr/wd phase and part of the extras phase: the rerun trains only what is left, and
    every extras trial sits at the lr and wd the rule chose from the first phase's results."""
    from bocb.analysis import select_cells

    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], epochs=2, seeds=[0],
                      optimizers=[{"name": "sgd", "extras": {"momentum": [0.8, 0.9, 0.95]}}, "adam"],
                      search={"phases": "two", "lr_points": 2, "wd_points": 1})
    out, db = tmp_path / "out", tmp_path / "out" / "bocb.db"
    staged = "SELECT trials.key, trials.state, trials.finished_at, plan.stage FROM trials JOIN plan ON " \
             "plan.trial_key = trials.key"
    run = subprocess.Popen([sys.executable, "-m", "bocb", "run", str(spec), "--out", str(out), "--workers", "1",
                            "--no-report"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline:
        rows = _query(db, staged)
        if len(rows) and ((rows["stage"] == "extras") & (rows["state"] == "done")).sum() >= 1:
            break
        time.sleep(0.3)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    time.sleep(1.0)
    before = _query(db, staged)
    done_before = before[before["state"] == "done"].set_index("key")
    assert 5 <= len(done_before) < 7, "the kill must land in the extras phase"
    code, _, err = bocb_main("run", str(spec), "--out", str(out), "--workers", "1", "--no-report", capsys=capsys)
    assert code == 0, err
    after = _finished(db).set_index("key")
    assert len(after) == 7 and after.index.is_unique and set(after["state"]) == {"done"}
    assert (after.loc[done_before.index, "finished_at"] == done_before["finished_at"]).all()
    assert after.loc[done_before.index, "attempts"].eq(1).all()
    trials = Store(db).trials_frame()
    search, extras = trials[trials["stage"] == "search"], trials[trials["stage"] == "extras"]
    assert len(search) == 4 and len(extras) == 3  # sgd: momentum 0.8, 0.95; adam: beta2 0.99
    chosen = select_cells(search).set_index("optimizer")
    for row in extras.itertuples():
        assert (row.lr, row.weight_decay) == (chosen.at[row.optimizer, "lr"], chosen.at[row.optimizer, "weight_decay"])


def test_absurd_lr_diverges_and_the_sweep_goes_on(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], epochs=2,
                      optimizers=[{"name": "sgd", "lr": [1.0e8]}, "adamw"])
    code, out, err = bocb_main("run", str(spec), "--out", str(tmp_path / "out"), "--workers", "1", "--no-report",
                               capsys=capsys)
    assert code == 0, err
    results = pd.read_csv(tmp_path / "out" / "results.csv").set_index("optimizer")
    assert results.loc["sgd", "state"] == "diverged" and pd.isna(results.loc["sgd", "test_top1"])
    assert results.loc["adamw", "state"] == "done" and results.loc["adamw", "test_top1"] > 10


@pytest.mark.slow
def test_every_optimizer_trains_through_the_cli(tmp_path: Path, capsys) -> None:
    from bocb.optim import OPTIMIZERS

    names = OPTIMIZERS.names()
    # mechanics, not learning: a fast tiny backbone (BatchNorm, convolutions, a linear head)
    spec = write_spec(tmp_path / "spec.yaml", backbones=["repvgg_a1"], optimizers=names, epochs=1, batch_size=128)
    code, _, err = bocb_main("run", str(spec), "--out", str(tmp_path / "out"), "--workers", "2", "--no-report",
                             capsys=capsys)
    assert code == 0, err
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(results["optimizer"]) == sorted(names)
    assert set(results["state"]) <= {"done", "diverged"}, results.loc[results["state"] == "failed", "error"].tolist()


def _status_rows(out: str) -> dict[str, list[str]]:
    """The stage table's rows: stage -> counts per state (rich draws cells between '┃' in the header, '│' below)."""
    cells = [[c.strip() for c in line.replace("┃", "│").split("│")[1:-1]] for line in out.splitlines()
             if line[:1] in ("│", "┃")]
    return {row[0]: row[1:] for row in cells if row and row[0] in ("stage", "search", "seeds")}


def test_status_shows_stages_running_epochs_stale_claims_and_errors(tmp_path: Path, capsys) -> None:
    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["sgd", "adamw"], epochs=3,
                      search={"lr_points": 2, "wd_points": 1})
    out = tmp_path / "out"
    code, _, err = bocb_main("run", str(spec), "--out", str(out), "--plan-only", capsys=capsys)
    assert code == 0, err
    store = Store(out / "bocb.db")
    benchmark = store.benchmark_ids()[0]
    running = store.claim("remote-host:1:a", benchmark)
    store.record_epoch(running.key, {"epoch": 0, "train_loss": 2.0})
    broken = store.claim("remote-host:2:b", benchmark)
    store.finish(broken.key, "remote-host:2:b", {"state": "failed", "error": "RuntimeError: boom\nmore"}, None)
    time.sleep(1.5)
    code, printed, err = bocb_main("status", str(out / "bocb.db"), "--stale-after", "1", capsys=capsys)
    assert code == 0, err
    rows = _status_rows(printed)
    assert rows["stage"] == ["pending", "running", "done", "diverged", "failed"]
    assert rows["search"] == ["2", "1", "0", "0", "1"]
    assert "1 of 4 trials finished" in printed
    running_line = next(line for line in printed.splitlines() if running.key[:10] in line)
    assert "1/3" in running_line and "remote-host:1:a" in running_line and "stale" in running_line
    assert f"failed {broken.key[:10]} resnet50 + " in printed and printed.rstrip().endswith("RuntimeError: boom")
    code, _, err = bocb_main("status", str(out / "bocb.db"), "--benchmark", "zzz", capsys=capsys)
    assert code == 2 and err.count("\n") == 1 and "--benchmark" in err


def _wait_for_first_checkpoint(db: Path, checkpoints: Path, process: subprocess.Popen) -> None:
    deadline = time.time() + 400
    while not (any(checkpoints.glob("*.pt")) and len(_query(db, "SELECT epoch FROM epochs")) >= 1):
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.time() < deadline, "no checkpoint written"
        time.sleep(0.3)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c on bocb run",
                                 pytest.param("ctrl-c on bocb run --executor ray", marks=pytest.mark.ray),
                                 "sigterm to bocb worker", "sigterm to bocb run"])
def test_stopped_run_releases_its_trial_which_resumes_from_its_checkpoint(tmp_path: Path, capsys, how: str) -> None:
    executor = "ray" if how.endswith("ray") else "local"
    if executor == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed")
    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["sgd"], epochs=3,
                      checkpoint_every=1, search={"lr_points": 1, "wd_points": 1}, executor=executor)
    out = tmp_path / "out"
    db = out / "bocb.db"
    if how.startswith("ctrl-c") or how == "sigterm to bocb run":
        command = ["run", str(spec), "--out", str(out), "--workers", "1", "--no-report"]
    else:  # a scheduler preempting one worker
        assert bocb_main("run", str(spec), "--out", str(out), "--plan-only", capsys=capsys)[0] == 0
        command = ["worker", "--store", str(db), "--artifact-root", str(out / "artifacts")]
    # as a terminal starts it: a job started in the background (`cmd &`, so a CI run too) ignores Ctrl-C
    process = subprocess.Popen([sys.executable, "-m", "bocb", *command], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _wait_for_first_checkpoint(db, out / "artifacts" / "checkpoints", process)
    if executor == "ray":  # the driver only: Ray workers on other nodes never see the terminal's Ctrl-C
        process.send_signal(signal.SIGINT)
    elif how.startswith("ctrl-c"):  # a terminal's Ctrl-C reaches the whole process group: parent and workers
        os.killpg(process.pid, signal.SIGINT)
    else:  # SIGTERM to the one process (a scheduler, `kill`): bocb run stops its own workers
        process.terminate()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1].startswith("interrupted: finished trials are stored")
    released = Store(db).trials_frame().iloc[0]
    assert released["state"] == "pending" and pd.isna(released["worker"]) and released["attempts"] == 1
    code, _, err = bocb_main("run", str(spec), "--out", str(out), "--workers", "1", "--executor", "local",
                             "--no-report", capsys=capsys)
    assert code == 0, err
    resumed = Store(db).trials_frame().iloc[0]
    assert resumed["state"] == "done" and resumed["attempts"] == 2 and resumed["resumed_from_epoch"] >= 1


@pytest.mark.slow
def test_a_rerun_trains_with_its_own_execution_fields_not_the_stored_ones(tmp_path: Path, capsys) -> None:
    """Device, checkpointing and the like do not change a benchmark, so a store planned for GPU workers
    can be finished on a CPU: the run's own spec must reach its workers."""
    planned_for_gpu = write_spec(tmp_path / "gpu.yaml", backbones=["alexnet"], optimizers=["sgd"], epochs=1,
                                 search={"lr_points": 2, "wd_points": 1}, device="cuda", checkpoint_every=0)
    here = write_spec(tmp_path / "cpu.yaml", backbones=["alexnet"], optimizers=["sgd"], epochs=1,
                      search={"lr_points": 2, "wd_points": 1}, device="cpu", checkpoint_every=1)
    out = tmp_path / "out"
    assert bocb_main("run", str(planned_for_gpu), "--out", str(out), "--plan-only", capsys=capsys)[0] == 0
    code, _, err = bocb_main("run", str(here), "--out", str(out), "--workers", "1", "--no-report", capsys=capsys)
    assert code == 0, err
    store = Store(out / "bocb.db")
    trials = store.trials_frame()
    assert len(trials) == 2 and set(trials["state"]) == {"done"} and set(trials["device"]) == {"cpu"}
    stored = store.benchmark_spec(store.benchmark_ids()[0])
    assert stored["device"] == "cpu" and stored["checkpoint_every"] == 1  # `bocb worker` follows the latest


CHILD_ONLY_FAILURE = '''
import multiprocessing

import torch

if multiprocessing.parent_process() is not None:  # imports in `bocb run`, fails in its worker processes
    raise ImportError("this module is not installed where the workers run")


class ShyOptimizer(torch.optim.SGD):
    pass
'''


@pytest.mark.slow
def test_a_worker_process_that_fails_is_no_finished_run(tmp_path: Path) -> None:
    (tmp_path / "shy_opts.py").write_text(CHILD_ONLY_FAILURE)
    spec = write_spec(tmp_path / "spec.yaml", backbones=["resnet50"], optimizers=["shy_opts:ShyOptimizer"],
                      epochs=1)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "bocb", "run", str(spec), "--out", str(tmp_path / "out"),
                           "--workers", "1", "--no-report"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "error: worker process: " in done.stderr and "this module is not installed" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("error: 1 of 1 worker process(es) failed (exit code 2")
    assert "finished in" not in done.stdout  # no matrix, no report: nothing passed for a result


def test_progress_off_a_terminal_is_a_line_at_most_every_so_often_and_one_at_the_end(finished_tiny) -> None:
    """Under a file or a pipe (CI's log, `nohup`), progress is whole lines: none drawn over another with a
    carriage return, at most one per interval, and the last one always."""
    from io import StringIO

    from rich.console import Console

    from bocb.store import Store
    from bocb.sweep.progress import RunProgress

    store = Store(finished_tiny / "bocb.db", read_only=True)
    written = StringIO()
    with RunProgress(store, store.benchmark_ids()[-1], Console(file=written, width=200), every_s=3600) as progress:
        for _ in range(5):
            progress.update(workers=2)
    lines = written.getvalue().splitlines()
    assert "\r" not in written.getvalue() and len(lines) == 2, lines
    total = len(store.trials_frame())
    assert all(line.startswith(f"progress: {total}/{total} trials finished, stage done, ") for line in lines)
