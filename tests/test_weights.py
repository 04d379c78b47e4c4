"""bocb.weights: metrics on matrices with known structure, loaders, CLI, plots, WeightWatcher agreement."""
from __future__ import annotations

import importlib.util
import math

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file
from torch import nn
from typer.testing import CliRunner

import bocb.cli.weights  # noqa: F401  (registers the command)
from bocb.cli._app import app
from bocb.errors import BocbError, DataError, SpecError
from bocb.weights import COLUMNS, NUMERIC_COLUMNS, fit_power_law, layer_table, load_state_dict

torch.set_num_threads(1)


def _table_of(weight: torch.Tensor, **kwargs: object) -> pd.Series:
    return layer_table({"w.weight": weight}, **kwargs).iloc[0]


class TinyNet(nn.Module):
    """Every analysed layer kind and every WeightWatcher path: conv slices (3x3 and 1x1 with
    out < in), the small-n fit (a 10-row Linear), a layer too small to fit, an Embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.conv1 = nn.Conv2d(3, 16, 3)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3)
        self.reduce = nn.Conv2d(32, 12, 1)
        self.fc = nn.Linear(12, 10)
        self.tiny = nn.Linear(4, 3)  # 3 eigenvalues < 8: no alpha


def _tiny_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return TinyNet()


def _tiny_vit(seed: int = 0) -> nn.Module:
    import timm

    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, img_size=32,
                             patch_size=8, embed_dim=64, depth=2, num_heads=2)


# -- alpha on matrices with known spectra --------------------------------------------------------------

def test_gaussian_matrix_is_bulk_with_large_alpha() -> None:
    g = torch.Generator().manual_seed(0)
    row = _table_of(torch.randn(800, 400, generator=g) / math.sqrt(800))
    assert row["alpha"] > 4.0
    assert row["num_eigs"] == 400


def test_planted_heavy_tailed_spectrum_has_small_alpha() -> None:
    rng = np.random.default_rng(0)
    eigenvalues = 0.01 * (rng.pareto(1.5, 400) + 1.0)  # density ~ x^-2.5
    u, _ = np.linalg.qr(rng.standard_normal((800, 400)))
    v, _ = np.linalg.qr(rng.standard_normal((400, 400)))
    row = _table_of(torch.tensor(u @ np.diag(np.sqrt(eigenvalues)) @ v.T))
    assert 2.0 < row["alpha"] < 3.0


def test_fit_recovers_pareto_exponent() -> None:
    sample = np.random.default_rng(1).pareto(2.0, 5000) + 1.0  # density ~ x^-3 from 1
    fit = fit_power_law(sample)
    assert fit.alpha == pytest.approx(3.0, abs=0.1)
    assert 0 < fit.D < 0.05


def test_small_n_fit_by_hand() -> None:
    # 8 values: the only tail with >= 8 values starts at x_0 = 1, where sum ln(x/x0) = 0+1+..+7 = 28.
    x = np.exp(np.arange(8.0))
    fit = fit_power_law(x)
    alpha = 1 + 7 / 28
    assert fit.alpha == pytest.approx(alpha)
    assert fit.xmin == pytest.approx(1.0)
    expected_d = max(abs(1 - math.exp((1 - alpha) * j) - j / 8) for j in range(8))
    assert fit.D == pytest.approx(expected_d)


def test_degenerate_spectra_have_no_alpha() -> None:
    assert math.isnan(fit_power_law(np.array([0.5])).alpha)
    assert math.isnan(_table_of(torch.eye(30))["alpha"])  # all eigenvalues tied: no power law


# -- other metrics ------------------------------------------------------------------------------------

def test_rank_one_matrix_has_top1_energy_one() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.outer(torch.randn(20, generator=g), torch.randn(30, generator=g))
    assert _table_of(w, topk=1)["topk_energy"] == pytest.approx(1.0)
    assert _table_of(w)["spectral_entropy"] == pytest.approx(0.0, abs=1e-9)


def test_topk_energy_by_hand_int_and_fraction() -> None:
    # Centred columns with variances proportional to 9, 4, 1.
    w = torch.tensor([[3.0, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1]])
    assert _table_of(w, topk=1)["topk_energy"] == pytest.approx(9 / 14)
    assert _table_of(w, topk=0.5)["topk_energy"] == pytest.approx(13 / 14)  # ceil(0.5 * 3) = 2
    assert _table_of(w, topk=10)["topk_energy"] == pytest.approx(1.0)


@pytest.mark.parametrize("topk", [0, -1, 1.5, 0.0, True, "5"])
def test_bad_topk_is_a_spec_error(topk: object) -> None:
    with pytest.raises(SpecError, match="topk"):
        _table_of(torch.ones(3, 3), topk=topk)


def test_weight_entropy_constant_zero_and_uniform_ln100() -> None:
    assert _table_of(torch.full((8, 8), 0.3))["weight_entropy"] == 0.0
    one_value_per_bin = torch.arange(100.0).reshape(10, 10)
    assert _table_of(one_value_per_bin)["weight_entropy"] == pytest.approx(math.log(100))


def test_spectral_entropy_by_hand() -> None:
    assert _table_of(torch.eye(4) * 2)["spectral_entropy"] == pytest.approx(1.0)
    p = np.array([4.0, 1.0]) / 5  # singular values 2 and 1
    expected = -(p * np.log(p)).sum() / math.log(2)
    assert _table_of(torch.diag(torch.tensor([2.0, 1.0])))["spectral_entropy"] == pytest.approx(expected)


def test_conv_is_sliced_per_kernel_position() -> None:
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 2, 2, 3, generator=g)
    row = _table_of(w)
    slices = [w[:, :, i, j].double().numpy() for i in range(2) for j in range(3)]
    assert row["type"] == "Conv2d" and row["shape"] == "4x2x2x3"
    assert row["num_eigs"] == 6 * 2
    assert row["spectral_norm"] == pytest.approx(max(np.linalg.norm(s, 2) for s in slices))
    assert row["l2_norm"] == pytest.approx(float(np.linalg.norm(w.double().numpy())))


# -- sources ------------------------------------------------------------------------------------------

def test_module_table_columns_names_and_types() -> None:
    table = layer_table(_tiny_net())
    assert tuple(table.columns) == COLUMNS
    assert list(table["name"]) == ["embed", "conv1", "conv2", "reduce", "fc", "tiny"]  # no BatchNorm
    assert list(table["type"]) == ["Embedding", "Conv2d", "Conv2d", "Conv2d", "Linear", "Linear"]
    assert list(table["layer"]) == list(range(6))
    assert all(pd.api.types.is_numeric_dtype(table[c]) for c in NUMERIC_COLUMNS)
    assert math.isnan(table.set_index("name").loc["tiny", "alpha"])


def test_state_dict_gives_the_same_numbers_as_the_module() -> None:
    model = _tiny_net()
    from_module = layer_table(model)
    from_state = layer_table(model.state_dict())
    assert list(from_state["name"]) == list(from_module["name"])
    assert from_state.loc[0, "type"] == "Linear"  # a 2-D state-dict tensor cannot say it was an Embedding
    pd.testing.assert_frame_equal(from_state[list(NUMERIC_COLUMNS)], from_module[list(NUMERIC_COLUMNS)])


def test_low_precision_weights_are_analysed_in_float64() -> None:
    model = _tiny_net()
    reference = layer_table(model)
    half = layer_table(model.to(torch.bfloat16))
    assert half["l2_norm"].to_numpy() == pytest.approx(reference["l2_norm"].to_numpy(), rel=1e-2)


def test_not_a_model_is_a_bocb_error() -> None:
    with pytest.raises(BocbError, match="nn.Module or a state dict"):
        layer_table([1, 2, 3])  # type: ignore[arg-type]


# -- files, CLI, store --------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["checkpoint", "state_dict", "safetensors"])
def test_load_state_dict_from_each_file_kind(tmp_path, kind: str) -> None:
    state = _tiny_net().state_dict()
    path = tmp_path / ("m.safetensors" if kind == "safetensors" else "m.pt")
    if kind == "checkpoint":
        torch.save({"format": "bocb-checkpoint-1", "epoch": 2, "model": state}, path)
    elif kind == "state_dict":
        torch.save(state, path)
    else:
        save_file(state, path)
    loaded = load_state_dict(path)
    assert loaded.keys() == state.keys()
    assert torch.equal(loaded["conv1.weight"], state["conv1.weight"])


def test_bad_files_are_one_line_data_errors(tmp_path) -> None:
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    (tmp_path / "w.txt").write_text("x")
    torch.save(torch.ones(3), tmp_path / "tensor.pt")
    cases = {tmp_path / "missing.pt": "no such file", tmp_path / "junk.pt": "cannot read",
             tmp_path / "w.txt": "valid: .pt", tmp_path / "tensor.pt": "holds no state dict"}
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as info:
            load_state_dict(path)
        assert "\n" not in str(info.value)


def test_cli_prints_table_writes_csv_and_plots(tmp_path) -> None:
    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": _tiny_net().state_dict()}, ckpt)
    result = CliRunner().invoke(app, ["weights", str(ckpt), "--csv", str(tmp_path / "t.csv"), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "conv2" in result.output and "alpha" in result.output
    csv = pd.read_csv(tmp_path / "t.csv")
    assert {"name", "alpha"} <= set(csv.columns) and len(csv) == 6
    result = CliRunner().invoke(app, ["weights", str(ckpt), "-o", str(tmp_path / "plots"), "--topk", "0.5"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "plots" / "alpha_bars.png").stat().st_size > 0
    assert (tmp_path / "plots" / "ridge_tiny_alpha.png").stat().st_size > 0


def test_cli_bad_path_is_one_line_error(tmp_path) -> None:
    result = CliRunner().invoke(app, ["weights", str(tmp_path / "nope.pt"), "--no-plots"])
    assert isinstance(result.exception, DataError)
    assert "no such file" in str(result.exception) and "\n" not in str(result.exception)


def test_cli_reads_a_stored_trial_by_key(tmp_path) -> None:
    from bocb.store import PlannedTrial, Store

    url = str(tmp_path / "bocb.db")
    store = Store(url)
    config = {"backbone": "tinynet", "size": "tiny", "optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.05,
              "seed": 0, "epochs": 1}
    store.register_benchmark("b1", "test", {})
    store.add_trials("b1", [PlannedTrial(key="abc123", config=config, stage="grid")])
    claimed = store.claim("w1")
    assert claimed is not None and claimed.key == "abc123"
    table = layer_table(_tiny_net())
    assert store.finish("abc123", "w1", {"state": "done"}, table)
    out = tmp_path / "stored.csv"
    result = CliRunner().invoke(app, ["weights", "abc", "--store", url, "--csv", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    stored = pd.read_csv(out)
    # The store keeps 10 significant digits (pandas to_json's default precision).
    np.testing.assert_allclose(stored["alpha"], table["alpha"], rtol=1e-9)
    result = CliRunner().invoke(app, ["weights", "zzz", "--no-plots"])
    assert isinstance(result.exception, DataError) and "--store" in str(result.exception)


# -- plots ---------------------------------------------------------------------------------------------

def _layer_frame() -> pd.DataFrame:
    parts = [layer_table(_tiny_net(seed)).assign(backbone=backbone, optimizer=optimizer)
             for seed, (backbone, optimizer) in enumerate(
                 [("tinynet", "sgd_m"), ("tinynet", "adamw"), ("other", "sgd_m"), ("other", "adamw")])]
    return pd.concat(parts, ignore_index=True)


def test_plots_draw_one_ridge_per_optimizer_and_a_banded_bar_chart(tmp_path) -> None:
    from bocb.weights.plots import alpha_bar_chart, ridge_plot, write_weight_plots

    frame = _layer_frame()
    fig = ridge_plot(frame, "weight_entropy", backbone="tinynet")
    assert len(fig.axes) == 2
    bars = alpha_bar_chart(frame)
    assert len(bars.axes[0].patches) >= 4  # 4 bars (+ the 2-6 band)
    written = write_weight_plots(frame, tmp_path, metrics=("alpha",))
    assert sorted(p.name for p in written) == ["alpha_bars.png", "ridge_other_alpha.png", "ridge_tinynet_alpha.png"]


def test_plot_input_errors_name_the_choices() -> None:
    from bocb.weights.plots import ridge_plot

    frame = _layer_frame()
    with pytest.raises(SpecError, match="backbone.*valid choices: other, tinynet"):
        ridge_plot(frame, "alpha")
    with pytest.raises(SpecError, match="metric"):
        ridge_plot(frame, "beta", backbone="other")
    with pytest.raises(DataError, match="optimizer"):
        ridge_plot(frame.drop(columns="optimizer"), "alpha")


# -- agreement with WeightWatcher ------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("weightwatcher") is None,
                    reason="weightwatcher not installed (pip install weightwatcher==0.7.7)")
@pytest.mark.parametrize("build", [_tiny_net, _tiny_vit], ids=["tinynet", "tiny_vit"])
def test_alpha_matches_weightwatcher(build, capsys) -> None:
    from bocb.weights.reference import compare_with_weightwatcher, weightwatcher_details

    model = build()
    comparison = compare_with_weightwatcher(model)
    ours = layer_table(model)
    # Same layers fitted: every WeightWatcher layer has our alpha, and ours has no extra ones.
    assert set(comparison["name"]) == set(ours.loc[ours["alpha"].notna(), "name"])
    assert comparison[["alpha_diff", "xmin_diff", "D_diff"]].max().max() < 1e-9
    details = weightwatcher_details(model).set_index("longname")
    entropy = ours.set_index("name").loc[details.index, "spectral_entropy"]
    np.testing.assert_allclose(entropy, details["entropy"], atol=1e-6)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""  # WeightWatcher's prints and logs stay out
