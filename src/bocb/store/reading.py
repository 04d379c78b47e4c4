"""The read models: the counts and pandas frames that `bocb status`, `results`, `report`, `models` and
`export` (and analysis) read."""
from __future__ import annotations

from typing import Any

import pandas as pd
import sqlalchemy as sa

from bocb.errors import BocbError, resolve_prefix
from bocb.protocol import TrialState, searched_trials, with_config
from bocb.store.rows import check_trial_rows, layer_rows
from bocb.store.schema import FINISHED_VALUES, benchmarks, epochs, layer_tables, plan, planned_keys, trials


class Reading:
    """Store's methods that read: progress for displays, and the frames of trials, epochs and layers."""

    engine: sa.Engine
    url: str

    def counts(self, benchmark_id: str | None = None) -> dict[str, int]:
        query = sa.select(trials.c.state, sa.func.count()).group_by(trials.c.state)
        if benchmark_id:
            query = query.join(plan, plan.c.trial_key == trials.c.key).where(plan.c.benchmark_id == benchmark_id)
        with self.engine.connect() as conn:
            return {state: n for state, n in conn.execute(query)}

    def stage_progress(self, benchmark_id: str) -> pd.DataFrame:
        """Per stage (in planned order) and state: the number of trials and their mean time (for progress
        displays: which stage runs, and how long its trials take)."""
        query = sa.select(plan.c.stage, trials.c.state, sa.func.count().label("n"),
                          sa.func.avg(trials.c.time_s).label("time_s"), sa.func.min(trials.c.created_at).label("at")) \
            .join(plan, plan.c.trial_key == trials.c.key).where(plan.c.benchmark_id == benchmark_id) \
            .group_by(plan.c.stage, trials.c.state)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query, conn)
        return frame.sort_values("at", kind="stable").drop(columns="at").reset_index(drop=True)

    def progress_signature(self, benchmark_id: str) -> tuple[int, int, float | None]:
        """(trials planned, trials finished, last finish time): changes exactly when the planner's view of
        the benchmark can have changed (a claim or a heartbeat leaves it alone), at the cost of one
        aggregate query instead of reading every trial."""
        finished = trials.c.state.in_(FINISHED_VALUES)
        query = sa.select(sa.func.count(), sa.func.count().filter(finished),
                          sa.func.max(trials.c.finished_at).filter(finished)) \
            .join(plan, plan.c.trial_key == trials.c.key).where(plan.c.benchmark_id == benchmark_id)
        with self.engine.connect() as conn:
            planned, done, last = conn.execute(query).one()
        return planned, done, last

    def best_trial(self, benchmark_id: str, metric: str = "val_top1") -> dict[str, Any] | None:
        """The finished trial with the highest ``metric`` (cheap: for progress displays)."""
        column = trials.c[metric]
        query = sa.select(trials.c.backbone, trials.c.optimizer, column).join(plan, plan.c.trial_key == trials.c.key) \
            .where(plan.c.benchmark_id == benchmark_id, trials.c.state == TrialState.DONE.value, column.is_not(None)) \
            .order_by(column.desc()).limit(1)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return dict(row._mapping) if row else None

    def trials_frame(self, benchmark_id: str | None = None) -> pd.DataFrame:
        """One row per (benchmark, trial), with flattened provenance."""
        query = sa.select(plan.c.benchmark_id.label("benchmark"), plan.c.stage, plan.c.budget,
                          benchmarks.c.name.label("benchmark_name"), trials) \
            .join(trials, trials.c.key == plan.c.trial_key).join(benchmarks, benchmarks.c.id == plan.c.benchmark_id)
        if benchmark_id:
            query = query.where(plan.c.benchmark_id == benchmark_id)
        with self.engine.connect() as conn:
            frame = pd.read_sql(query.order_by(trials.c.created_at, trials.c.key), conn)
        return _tidy_trials(frame.rename(columns={"key": "trial_key"}))

    def epochs_frame(self, benchmark_id: str | None = None) -> pd.DataFrame:
        query = sa.select(epochs).order_by(epochs.c.trial_key, epochs.c.epoch)
        if benchmark_id:
            query = query.where(epochs.c.trial_key.in_(
                sa.select(plan.c.trial_key).where(plan.c.benchmark_id == benchmark_id)))
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def layer_table(self, key: str) -> pd.DataFrame:
        """The stored layer table of the trial ``key`` (or of the one trial whose key starts with it)."""
        with self.engine.connect() as conn:
            starting = layer_tables.c.trial_key.startswith(key, autoescape=True)  # '%' or '_' match only themselves
            keys = conn.execute(sa.select(layer_tables.c.trial_key).where(starting)).scalars().all()
            if not keys:
                raise BocbError(f"store: no layer table for trial '{key}' in {self.url}")
            chosen = resolve_prefix("trial key", "trial key", key, keys)
            query = sa.select(layer_tables.c.table_json).where(layer_tables.c.trial_key == chosen)
            text = conn.execute(query).scalar()
        return layer_rows(chosen, text)

    def layers_frame(self, benchmark_id: str | None = None) -> pd.DataFrame:
        """All stored layer tables with backbone, optimizer, seed and stage columns (for ridge plots)."""
        query = sa.select(trials.c.key, trials.c.backbone, trials.c.optimizer, trials.c.seed,
                          layer_tables.c.table_json).join(layer_tables, layer_tables.c.trial_key == trials.c.key)
        if benchmark_id:
            query = query.where(trials.c.key.in_(planned_keys(benchmark_id)))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        parts = [layer_rows(r.key, r.table_json).assign(
            trial_key=r.key, backbone=r.backbone, optimizer=r.optimizer, seed=r.seed) for r in rows]
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _tidy_trials(frame: pd.DataFrame) -> pd.DataFrame:
    if frame.empty:
        return frame
    configs, prov = check_trial_rows(frame)
    opt = prov.map(lambda p: p.get("optimizer", {}) if isinstance(p.get("optimizer"), dict) else {})
    frame = with_config(frame).assign(
        # the dataset the trial trained on, so results.csv states it (`bocb report --compare-paper` reads it)
        dataset=configs.map(lambda c: (c.get("dataset") or {}).get("name")),
        optimizer_library=opt.map(lambda o: o.get("library")),
        optimizer_class=opt.map(lambda o: o.get("class")),
        optimizer_category=opt.map(lambda o: o.get("category")),  # a-d, new (None: a trial run before bocb kept it)
        device=prov.map(lambda p: p.get("device")),
        git_commit=prov.map(lambda p: p.get("git_commit")),
        bocb_version=prov.map(lambda p: p.get("bocb")),
        lock=prov.map(lambda p: p.get("lock")),  # the requirements.lock the trial ran under (None: no lock)
        torch_version=prov.map(lambda p: p.get("torch")),
        timm_version=prov.map(lambda p: p.get("timm")),
        num_classes=prov.map(lambda p: p.get("num_classes")),  # a diverged trial scores chance in analyses
        test_size=prov.map(lambda p: p.get("test_size")),  # how far from chance is noise (protocol.did_not_learn)
    )
    return _with_grids(frame)


def _with_grids(frame: pd.DataFrame) -> pd.DataFrame:
    """lr_grid / wd_grid: the values searched at full budget per (benchmark, backbone, optimizer)."""
    grids = searched_trials(frame).groupby(["benchmark", "backbone", "optimizer"]).agg(
        lr_grid=("lr", lambda s: ";".join(f"{v:g}" for v in sorted(set(s)))),
        wd_grid=("weight_decay", lambda s: ";".join(f"{v:g}" for v in sorted(set(s)))),
    ).reset_index()
    return frame.merge(grids, on=["benchmark", "backbone", "optimizer"], how="left")
