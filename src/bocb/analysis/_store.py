"""Everything a store's report shows, analysed once: a benchmark (its gamma and alpha from its stored spec), its
layer tables, and the transfer part fine-tuned from it when the store holds one. `bocb run` and `bocb report STORE`
both build their output from :func:`analyse_store`, so the two reports of one store are the same."""
from __future__ import annotations

import os
from dataclasses import dataclass

import pandas as pd

from bocb.analysis._analyse import Analysis, analyse
from bocb.analysis._transfer import TransferAnalysis, transfer_analysis
from bocb.errors import BocbError
from bocb.protocol import rule_parameters, scored
from bocb.store import Store


@dataclass
class StoreAnalysis:
    benchmark_id: str
    result: Analysis
    layers: pd.DataFrame                      # the benchmark's layer tables (empty when none were stored)
    transfer_id: str | None = None            # the transfer benchmark fine-tuned from this one, if stored
    transfer: TransferAnalysis | None = None  # None until a fine-tuning trial has a result
    transfer_layers: pd.DataFrame | None = None
    transfer_dataset: str = ""


def analyse_store(store: Store | str | os.PathLike[str], benchmark_id: str | None = None, *,
                  transfer_id: str | None = None, gamma: float | None = None, alpha: float | None = None,
                  n_boot: int = 1000) -> StoreAnalysis:
    """Analyse ``benchmark_id`` of ``store`` (default: the latest benchmark that is not a transfer part; a
    transfer part's id stands for its pre-training benchmark) with the rules' parameters of its stored spec
    (``gamma``/``alpha`` override them), and its transfer part ``transfer_id`` (default: the latest stored
    benchmark whose spec's ``transfer_from`` is this one)."""
    db = store if isinstance(store, Store) else Store(store, read_only=True)
    specs = {i: db.benchmark_spec(i) for i in db.benchmark_ids()}
    chosen = _pretraining(specs, benchmark_id, db.url)
    stored_gamma, stored_alpha = rule_parameters(specs[chosen])
    alpha = stored_alpha if alpha is None else alpha
    trials = db.trials_frame(chosen)
    result = analyse(trials, db.epochs_frame(chosen), gamma=stored_gamma if gamma is None else gamma, alpha=alpha,
                     n_boot=n_boot)
    analysed = StoreAnalysis(chosen, result, db.layers_frame(chosen))
    parts = [i for i, spec in specs.items() if spec.get("transfer_from") == chosen]
    transfer_id = transfer_id or (parts[-1] if parts else None)
    if transfer_id is None:
        return analysed
    analysed.transfer_id = transfer_id
    analysed.transfer_dataset = str(((specs[transfer_id].get("transfer") or {}).get("dataset") or {}).get("name", ""))
    tuned = db.trials_frame(transfer_id)
    if not scored(tuned).empty:
        analysed.transfer = transfer_analysis(tuned, trials, alpha=alpha, n_boot=n_boot,
                                              gamma=rule_parameters(specs[transfer_id])[0])
        analysed.transfer_layers = db.layers_frame(transfer_id)
    return analysed


def _pretraining(specs: dict[str, dict], requested: str | None, url: str) -> str:
    """The benchmark a report is about: ``requested`` (a transfer part's pre-training benchmark for a transfer
    part), else the latest one that is not a transfer part."""
    if requested is not None:
        if requested not in specs:
            raise BocbError(f"store: no benchmark '{requested}' in {url}")
        return specs[requested].get("transfer_from") or requested
    own = [i for i, spec in specs.items() if not spec.get("transfer_from")]
    if not own:
        raise BocbError(f"store: {url} holds no benchmark")
    return own[-1]
