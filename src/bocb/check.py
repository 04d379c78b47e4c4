"""`bocb check`: put one backbone or one optimizer through the gauntlet of a reference panel.

A backbone is trained against the panel's optimizers, an optimizer against the panel's backbones, by the
panel preset's protocol. The reference cells (the panel's known backbones x optimizers) are trained once per
bocb version, lock and device, and kept as a bundle in the user's cache (``$BOCB_CACHE``, default
``~/.cache/bocb``); a check imports them into its store after verifying, from each trial's provenance, that
they were made by this bocb version with this lock on this kind of device. Everything else is the usual
machinery: the planner, the executors, the store, the analysis and the report.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from bocb.errors import SpecError, unknown_name_message
from bocb.protocol import TrialState
from bocb.spec import BenchmarkSpec, load_preset, parse_spec

Kind = Literal["backbone", "optimizer"]
KINDS: tuple[Kind, ...] = ("backbone", "optimizer")
FINGERPRINT = ("bocb", "lock", "device", "device_name")  # provenance that must match for reference reuse


@dataclass(frozen=True)
class Gauntlet:
    target: str  # as the registry resolves it (a name, or 'package.module:attr')
    kind: Kind
    reference: BenchmarkSpec  # the panel: its known backbones x optimizers
    candidate: BenchmarkSpec  # the target against the panel

    @property
    def panel(self) -> list[str]:
        """The other axis: the optimizers a backbone meets, or the backbones an optimizer trains."""
        entries = self.reference.optimizers if self.kind == "backbone" else self.reference.backbones
        return [e.name for e in entries]


def target_kind(target: str, forced: Kind | None = None) -> tuple[str, Kind]:
    """(the target's resolved name, whether it is a backbone or an optimizer), told from the object itself;
    ``forced`` settles a name both registries know."""
    found = {kind: name for kind in KINDS if (name := _resolved(kind, target)) is not None}
    if len(found) == 2 and forced is None and _is_optimizer_class(target):
        found.pop("backbone")  # a class is callable, but a torch.optim.Optimizer builds no backbone
    if forced is not None:
        if forced not in found:
            raise SpecError("TARGET", f"'{target}' is not a {forced} ({_resolve_error(forced, target)})")
        return found[forced], forced
    if len(found) == 2:
        raise SpecError("TARGET", f"'{target}' names both a backbone and an optimizer; add --backbone or "
                                  "--optimizer")
    if not found and ":" in target:  # a reference: why it resolves to neither (it fails to import, say)
        raise SpecError("TARGET", f"'{target}' is neither a backbone factory nor an optimizer class "
                                  f"({_resolve_error('backbone', target)})")
    if not found:
        from bocb.backbones import BACKBONES
        from bocb.optim import OPTIMIZERS

        names = [b.name for b in BACKBONES] + [o.name for o in OPTIMIZERS]
        raise SpecError("TARGET", unknown_name_message("backbone or optimizer", target, names)
                        + "; or package.module:factory (a backbone) or package.module:Class (an optimizer)")
    (kind, name), = found.items()
    return name, kind


def _is_optimizer_class(target: str) -> bool:
    from bocb.plugins import import_object, is_reference

    if not is_reference(target):
        return False
    import torch

    found = import_object(target, "TARGET", "object")
    return isinstance(found, type) and issubclass(found, torch.optim.Optimizer)


def _resolved(kind: Kind, target: str) -> str | None:
    try:
        return _resolve(kind, target)
    except SpecError:
        return None


def _resolve_error(kind: Kind, target: str) -> str:
    try:
        _resolve(kind, target)
    except SpecError as exc:
        return str(exc).removeprefix(f"{exc.field}: ")
    return ""


def _resolve(kind: Kind, target: str) -> str:
    if kind == "backbone":
        from bocb.backbones import resolve_backbone_name

        return resolve_backbone_name(target, field="TARGET")
    from bocb.optim import OPTIMIZERS

    return OPTIMIZERS.get(target, field="TARGET").name


def gauntlet(target: str, kind: Kind | None = None, preset: str = "quick", backbones: list[str] | None = None,
             optimizers: list[str] | None = None, epochs: int | None = None) -> Gauntlet:
    """The reference and candidate specs of a check: the preset's protocol, its panel (or the one given),
    the target in place of the panel's own entry of its kind."""
    name, kind = target_kind(target, kind)
    base = load_preset(preset).model_dump(mode="json", exclude_unset=True)
    panel_backbones = backbones or [b["name"] for b in base["backbones"]]
    panel_optimizers = optimizers or [o if isinstance(o, str) else o["name"] for o in base["optimizers"]]
    if epochs is not None:
        base["epochs"] = epochs
    if kind == "backbone":
        panel_backbones = [b for b in panel_backbones if b != name]
        candidate = {"backbones": [name], "optimizers": panel_optimizers}
    else:
        panel_optimizers = [o for o in panel_optimizers if o != name]
        candidate = {"backbones": panel_backbones, "optimizers": [name]}
    if not panel_backbones or not panel_optimizers:
        raise SpecError("--backbones" if not panel_backbones else "--optimizers", "the panel is empty")
    reference = parse_spec({**base, "name": f"reference panel ({preset})", "backbones": panel_backbones,
                            "optimizers": panel_optimizers})
    # every cell of the target at every seed: the failure rule compares it with cells of another benchmark
    candidate = parse_spec({**base, **candidate, "name": f"check {name}", "reseed": "all"})
    return Gauntlet(name, kind, reference, candidate)


def paper_optimizers() -> list[str]:
    """The paper's 20 optimizers (Table 1's rows), as registry names."""
    from bocb.paper import OPTIMIZER_NAMES, load_table

    return list(dict.fromkeys(OPTIMIZER_NAMES[row] for row in load_table(1).index))


# -- the reference cache -------------------------------------------------------------------------------

def fingerprint(device: str) -> dict[str, str]:
    """What a reference trial's provenance must say for this machine to reuse it."""
    import torch

    from bocb.devices import resolve_device
    from bocb.provenance import environment

    resolved = resolve_device(device)
    env = environment()
    return {"bocb": str(env["bocb"]), "lock": str(env["lock"]), "device": resolved.type,
            "device_name": torch.cuda.get_device_name(resolved) if resolved.type == "cuda" else "cpu"}


def cache_path(reference: BenchmarkSpec, wanted: dict[str, str]) -> Path:
    root = Path(os.environ.get("BOCB_CACHE") or Path.home() / ".cache" / "bocb")
    tag = hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()[:12]
    return root / "reference" / f"{reference.benchmark_id()}-{tag}.zip"


def mismatches(rows: list[dict[str, Any]], wanted: dict[str, str]) -> list[str]:
    """How the trials' provenance differs from ``wanted`` ('bocb 0.1.0 != 0.2.0', ...); empty if it matches."""
    found = set()
    for row in rows:
        provenance = json.loads(row.get("provenance_json") or "{}")
        device = str(provenance.get("device", "")).split(":")[0]
        seen = {"bocb": provenance.get("bocb"), "lock": provenance.get("lock"), "device": device,
                "device_name": provenance.get("device_name")}
        found |= {f"{k} {seen[k]} != {wanted[k]}" for k in FINGERPRINT if str(seen[k]) != wanted[k]}
    return sorted(found)


# -- running it ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CheckRun:
    gauntlet: Gauntlet
    store: Any  # bocb.store.Store
    reference_id: str
    candidate_id: str
    reference_from: str  # where the reference cells came from, in words
    cached: Path | None  # the cache bundle written or read


def plan_check(g: Gauntlet, out: Path, store_url: str | None = None) -> CheckRun:
    """Plan the check into its store: the reference cells from the cache when a matching bundle is there
    (else planned, to be trained), and the candidate's cells."""
    from bocb.bundle import read_bundle
    from bocb.sweep import plan_benchmark

    reference = plan_benchmark(g.reference, out, store_url)
    wanted = fingerprint(g.reference.device)
    cached = cache_path(g.reference, wanted)
    origin = f"none cached for bocb {wanted['bocb']}, lock {wanted['lock']}, {wanted['device_name']}: trained now"
    if unfinished(reference.store, reference.benchmark_id) and cached.is_file():
        rows = read_bundle(cached)
        differs = mismatches(rows["trials"], wanted)
        if differs:
            origin = f"the cached reference was made elsewhere ({'; '.join(differs)[:200]}): trained again"
        else:
            merged = reference.store.merge_finished(rows)
            origin = f"from the cache ({merged.added + merged.present} trials, {cached})"
    elif not unfinished(reference.store, reference.benchmark_id):
        origin = "already in this store"
    candidate = plan_benchmark(g.candidate, out, store_url)
    return CheckRun(g, reference.store, reference.benchmark_id, candidate.benchmark_id, origin, cached)


def unfinished(store: Any, benchmark_id: str) -> bool:
    """Whether the benchmark has any trial to train, or a stage still to plan."""
    from bocb.sweep.planner import next_stage
    from bocb.sweep.worker import load_benchmark

    return next_stage(load_benchmark(store, benchmark_id), store.trials_frame(benchmark_id),
                      lambda: store.epochs_frame(benchmark_id)) is not None


def cache_reference(run: CheckRun) -> bool:
    """Keep the finished reference cells as a bundle in the cache (if none is there and none crashed)."""
    from bocb.bundle import export_bundle

    trials = run.store.trials_frame(run.reference_id)
    if run.cached is None or run.cached.is_file() or unfinished(run.store, run.reference_id) \
            or (trials["state"] == TrialState.FAILED).any():
        return False
    run.cached.parent.mkdir(parents=True, exist_ok=True)
    export_bundle(run.store, run.reference_id, run.cached, overwrite=True)
    return True


# -- what it says ----------------------------------------------------------------------------------------

def placement(result: Any, g: Gauntlet) -> Any:
    """Where the target falls among the backbones (or optimizers) of the check on the paper's statistics:
    statistic, target's value, its rank (1 = lowest value) and how many there are."""
    import pandas as pd

    from bocb.analysis import hp_robustness

    judged = result.cells[result.cells["learned"]] if "learned" in result.cells else result.cells
    if g.kind == "backbone":
        summary = result.summary.set_index("backbone")
        stats = {"Std after removing the worst (points)": summary["std"],
                 "Range after removing the worst (points)": summary["range"],
                 "Eq. 1 failures": summary["n_eq1"],
                 "hyper-parameter distance to the mode (grid steps)": hp_robustness(judged, "backbone")}
    else:
        ranks = judged.groupby("backbone")["test_top1"].rank(ascending=False)
        stats = {"mean rank within each backbone (1 = best)": ranks.groupby(judged["optimizer"]).mean(),
                 "Eq. 1 failures": judged.groupby("optimizer")["eq1"].sum(),
                 "hyper-parameter distance to the mode (grid steps)": hp_robustness(judged, "optimizer")}
    rows = []
    for statistic, values in stats.items():
        values = values.dropna()
        if g.target in values.index:
            value = float(values[g.target])
            rows.append({"statistic": statistic, "value": value, "rank": int((values < value).sum()) + 1,
                         "of": len(values)})
    return pd.DataFrame(rows, columns=["statistic", "value", "rank", "of"])


def paper_orientation(result: Any, g: Gauntlet) -> str:
    """Only as orientation: where the target's Std and Range after removing the worst would fall among the
    paper's 20 published backbones (CIFAR-100, paper-size models: another dataset and scale)."""
    if g.kind != "backbone":
        return ""
    from bocb.paper import analyse_table

    _, paper = analyse_table(1)
    mine = result.summary.set_index("backbone")
    if g.target not in mine.index:
        return ""
    parts = []
    for column in ("std", "range"):
        value = float(mine.loc[g.target, column])
        if value != value:  # NaN: too few optimizers left after removing the worst
            continue
        below = int((paper[column] < value).sum())
        parts.append(f"{column.capitalize()} {value:.2f} would be lower than {len(paper) - below} of the paper's "
                     f"{len(paper)} backbones")
    return ("orientation only (the paper's Table 1 is CIFAR-100 with paper-size models, not this dataset and "
            "scale): " + "; ".join(parts)) if parts else ""


def verdict_lines(result: Any, g: Gauntlet) -> list[str]:
    """The target's verdict by the rule of `bocb run`: a backbone's own; an optimizer's per backbone
    (tied with the best there, or flagged by Eq. 1)."""
    verdicts = result.verdicts.set_index("backbone")
    if g.kind == "backbone":
        if g.target not in verdicts.index:
            return [f"{g.target}: no result (every trial crashed)"]
        row = verdicts.loc[g.target]
        return [f"{g.target}: {row['verdict']}; use: {row['recommended']}", f"  {row['explanation']}"]
    cells = result.cells[result.cells["optimizer"] == g.target].set_index("backbone")
    tied = [b for b in verdicts.index if g.target in [o.strip() for o in verdicts.loc[b, "recommended"].split(",")]]
    fails = [b for b in cells.index if bool(cells.loc[b, "eq1"])]
    return [f"{g.target}: tied with the best optimizer on {len(tied)} of {len(verdicts)} backbones"
            + (f" ({', '.join(tied)})" if tied else ""),
            f"  fails (Eq. 1, γ = {result.gamma:g}) on {len(fails)}" + (f": {', '.join(fails)}" if fails else "")]
