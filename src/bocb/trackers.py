"""A benchmark's trials where researchers already follow runs: TensorBoard event files and an MLflow tracking
store (`bocb export STORE --tensorboard DIR --mlflow URI`; the optional extras `bocb[tensorboard]` and
`bocb[mlflow]`, imported by these exports only).

One run per scored trial (done or diverged: a crash is not a result), named so a person finds its cell:
``BACKBONE/OPTIMIZER/CONFIG/seedN-KEY``. A run holds the trial's per-epoch curves (steps are epochs), its final
metrics under ``final/…``, its hyper-parameters (TensorBoard's HParams view, MLflow's params) and, in MLflow,
its key, stage, state and provenance as tags. A trial already exported is recognised by its key and skipped,
so running an export again adds nothing twice and adds what finished since.
"""
from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from bocb.errors import BocbError, SpecError
from bocb.protocol import SCORED

CURVES = ("train_loss", "val_top1", "test_top1", "test_top5", "lr", "ema_val_top1", "ema_test_top1")
FINALS = ("val_top1", "test_top1", "test_top5", "train_loss")
PROVENANCE_TAGS = ("optimizer_library", "optimizer_class", "device", "git_commit", "bocb_version", "lock",
                   "torch_version", "timm_version", "dataset")
KEY_TAG = "bocb.trial_key"


@dataclass(frozen=True)
class TrialRun:
    """One scored trial as both trackers show it."""

    key: str
    name: str
    params: dict[str, str | float | int]
    finals: dict[str, float]
    curves: dict[str, list[tuple[int, float]]]
    tags: dict[str, str]
    started_at: float | None = None
    finished_at: float | None = None


@dataclass
class Exported:
    added: int = 0
    present: int = 0
    names: list[str] = field(default_factory=list)


def trial_runs(trials: pd.DataFrame, epochs: pd.DataFrame) -> list[TrialRun]:
    """The scored trials of a store's frames (``Store.trials_frame``/``epochs_frame`` of one benchmark)."""
    scored = trials[trials["state"].isin([s.value for s in SCORED])]
    curves = {key: rows.sort_values("epoch") for key, rows in epochs.groupby("trial_key")} if len(epochs) else {}
    return [_trial_run(row, curves.get(row["trial_key"])) for _, row in scored.iterrows()]


def _trial_run(row: pd.Series, epochs: pd.DataFrame | None) -> TrialRun:
    hparams = json.loads(row["hparams_json"] or "{}")
    params: dict[str, str | float | int] = {
        "backbone": row["backbone"], "optimizer": row["optimizer"], "lr": float(row["lr"]),
        "weight_decay": float(row["weight_decay"]), "seed": int(row["seed"]), "epochs": int(row["epochs"]),
        "stage": row["stage"], "state": row["state"]}
    # an optimizer's own searched or fixed arguments (momentum, betas...): a list becomes its JSON text
    params.update({f"extra.{k}": v if isinstance(v, (int, float, str)) and not isinstance(v, bool)
                   else json.dumps(v) for k, v in sorted(hparams.items())})
    name = "/".join(_safe(part) for part in (row["backbone"], row["optimizer"], row["config"]))
    tags = {KEY_TAG: row["trial_key"], "bocb.benchmark": row["benchmark"], "bocb.stage": row["stage"],
            "bocb.state": row["state"]}
    tags.update({f"bocb.{c}": str(row[c]) for c in PROVENANCE_TAGS if c in row and _present(row[c])})
    return TrialRun(
        key=row["trial_key"], name=f"{name}/seed{int(row['seed'])}-{row['trial_key'][:8]}", params=params,
        finals={m: float(row[m]) for m in FINALS if _present(row[m])},
        curves={c: [(int(e), float(v)) for e, v in zip(epochs["epoch"], epochs[c]) if _present(v)]
                for c in CURVES if epochs is not None and c in epochs and epochs[c].notna().any()},
        tags=tags, started_at=_time(row.get("started_at")), finished_at=_time(row.get("finished_at")))


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def _time(value: Any) -> float | None:
    return float(value) if _present(value) else None


def _safe(part: str) -> str:
    """A path component: a plugin's `module:object` name keeps its colon, a slash would nest a directory."""
    return str(part).replace("/", "_").replace("\\", "_") or "_"


# -- TensorBoard ------------------------------------------------------------------------------------------

def to_tensorboard(runs: list[TrialRun], root: Path) -> Exported:
    """One directory of event files per run under ``root``; a run whose directory exists is already there.
    Each is written beside its place and renamed into it, so an interrupted export leaves no half run."""
    writer_module = _tensorboard()
    exported = Exported()
    for run in runs:
        target = root / run.name
        if target.is_dir():
            exported.present += 1
            continue
        partial = target.with_name(target.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)  # left by an export that was interrupted
        partial.mkdir(parents=True)
        _write_events(writer_module, run, partial)
        partial.rename(target)
        exported.added += 1
        exported.names.append(run.name)
    return exported


def _tensorboard() -> Any:
    try:
        from tensorboard.summary.writer import event_file_writer
    except ImportError:
        raise BocbError("--tensorboard: tensorboard is not installed; pip install 'bocb[tensorboard]'") from None
    return event_file_writer


def _write_events(writer_module: Any, run: TrialRun, directory: Path) -> None:
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    writer = writer_module.EventFileWriter(str(directory))
    wall = run.finished_at or 0.0
    for tag, points in run.curves.items():
        for epoch, value in points:
            writer.add_event(Event(wall_time=wall, step=epoch, summary=Summary(
                value=[Summary.Value(tag=tag, simple_value=value)])))
    last = max((e for points in run.curves.values() for e, _ in points), default=0)
    for metric, value in run.finals.items():
        writer.add_event(Event(wall_time=wall, step=last, summary=Summary(
            value=[Summary.Value(tag=f"final/{metric}", simple_value=value)])))
    for summary in _hparams_summaries(run):
        writer.add_event(Event(wall_time=wall, step=0, summary=summary))
    writer.close()


def _hparams_summaries(run: TrialRun) -> Iterator[Any]:
    """The HParams view's session start (the hyper-parameters) and end (its status) of one run, as the
    plugin's protocol buffers. By hand: tensorboard's own writer for them (plugins.hparams.summary) needs
    TensorFlow; the plugin infers the experiment (columns and metrics) from these sessions."""
    from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
    from tensorboard.plugins.hparams import api_pb2, metadata, plugin_data_pb2

    start = plugin_data_pb2.SessionStartInfo(start_time_secs=run.started_at or 0.0)
    for name, value in run.params.items():
        if isinstance(value, str):
            start.hparams[name].string_value = value
        else:
            start.hparams[name].number_value = value
    end = plugin_data_pb2.SessionEndInfo(status=api_pb2.STATUS_SUCCESS, end_time_secs=run.finished_at or 0.0)
    for tag, data in ((metadata.SESSION_START_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_start_info=start)),
                      (metadata.SESSION_END_INFO_TAG, plugin_data_pb2.HParamsPluginData(session_end_info=end))):
        data.version = metadata.PLUGIN_DATA_VERSION
        content = SummaryMetadata.PluginData(plugin_name=metadata.PLUGIN_NAME, content=data.SerializeToString())
        yield Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=content))])


# -- MLflow -----------------------------------------------------------------------------------------------

MLFLOW_BATCH = {"params": 100, "metrics": 1000}  # MLflow's limits per log_batch call


def to_mlflow(runs: list[TrialRun], uri: str, experiment: str) -> Exported:
    """One run per trial in ``experiment`` of the tracking store at ``uri`` (created if missing); a trial
    whose key is a run's tag there is already there."""
    client, entities = _mlflow(uri)
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_experiment_by_name(experiment)
        experiment_id = found.experiment_id if found else client.create_experiment(experiment)
        there = _exported_keys(client, experiment_id)
        exported = Exported(present=sum(run.key in there for run in runs))
        for run in (r for r in runs if r.key not in there):
            _log_run(client, entities, experiment_id, run)
            exported.added += 1
            exported.names.append(run.name)
    except (MlflowException, ValueError) as exc:  # a scheme it has no store for, a server that refuses
        raise SpecError("--mlflow", f"{uri!r}: {_first_line(exc)}; give e.g. sqlite:///mlflow.db or "
                        "http://host:5000") from None
    return exported


def _mlflow(uri: str) -> tuple[Any, Any]:
    try:
        import mlflow.entities as entities
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise BocbError("--mlflow: mlflow is not installed; pip install 'bocb[mlflow]'") from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its table creation is not the user's business
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        client = MlflowClient(tracking_uri=uri)
    except (MlflowException, ValueError) as exc:
        raise SpecError("--mlflow", f"{uri!r}: {_first_line(exc)}; give e.g. sqlite:///mlflow.db or "
                        "http://host:5000") from None
    return client, entities


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0][:300]


def _exported_keys(client: Any, experiment_id: str) -> set[str]:
    keys: set[str] = set()
    token = None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token)
        keys.update(run.data.tags.get(KEY_TAG) for run in page)
        token = page.token
        if not token:
            return keys


def _log_run(client: Any, entities: Any, experiment_id: str, run: TrialRun) -> None:
    millis = int((run.finished_at or 0.0) * 1000)
    created = client.create_run(experiment_id, start_time=int((run.started_at or 0.0) * 1000) or None,
                                tags={**run.tags, "mlflow.runName": run.name}, run_name=run.name)
    run_id = created.info.run_id
    params = [entities.Param(k, str(v)) for k, v in run.params.items()]
    metrics = [entities.Metric(tag, value, millis, epoch) for tag, points in run.curves.items()
               for epoch, value in points]
    last = max((e for points in run.curves.values() for e, _ in points), default=0)
    metrics += [entities.Metric(f"final/{m}", v, millis, last) for m, v in run.finals.items()]
    for chunk in _chunks(params, MLFLOW_BATCH["params"]):
        client.log_batch(run_id, params=chunk)
    for chunk in _chunks(metrics, MLFLOW_BATCH["metrics"]):
        client.log_batch(run_id, metrics=chunk)
    client.set_terminated(run_id, status="FINISHED", end_time=millis or None)


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    return (items[i:i + size] for i in range(0, len(items), size))
