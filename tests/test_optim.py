"""The optimizer zoo: every registered optimizer trains tiny timm models on digits; Sophia's Hessian
refresh, LARS's trust ratio, the search grids and the weight-decay policy checked against hand values."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from bocb.errors import SpecError
from bocb.optim import OPTIMIZERS, build_optimizer, optimizer_table, search_space, weight_decay_groups

torch.set_num_threads(1)
PAPER_TABLE1 = Path("/work/shared/paper/table1_cifar100_top1.csv")
PAPER_OPTIMIZERS = ["SGD-M", "SGDP", "LION", "Adam", "Adamax", "NAdam", "AdamW", "LAMB", "RAdam", "AdamP", "Adan",
                    "AdaBound", "LARS", "AdaFactor", "AdaBelief", "NovoGrad", "Sophia", "AdaGrad", "AdaDelta",
                    "RMSProp"]
STEPS, BATCH, WARMUP = 50, 64, 10
# LARS moves every tensor by lr * trust_coeff = 0.1 % of its norm per step; the ViT's 0.02-std weights
# need more than 50 such steps before the loss moves (the ResNet's do not). Default lr kept.
STEPS_OVERRIDE = {("lars", "vit"): 100}


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """sklearn's 8x8 digits, upsampled to 16x16, 3 channels, standardised."""
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    x = F.interpolate(x, size=16, mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    return (x - x.mean()) / x.std(), torch.tensor(data.target)


def tiny_resnet() -> nn.Module:
    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(8, 16, 32, 32))


def tiny_vit() -> nn.Module:
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10,
                             global_pool="avg", class_token=False)


MODELS = {"resnet": (tiny_resnet, "classical"), "vit": (tiny_vit, "modern")}


def train_losses(name: str, model_name: str, digits: tuple[torch.Tensor, torch.Tensor]) -> list[float]:
    """Train with the family default lr/wd; the modern family warms up linearly as its recipes do."""
    make, family = MODELS[model_name]
    torch.manual_seed(0)
    model = make()
    info = OPTIMIZERS.get(name)
    warmup = WARMUP if family == "modern" else 0
    # schedule-free optimizers warm up internally and must not have their lr touched
    hparams = {} if info.uses_lr_schedule else {"warmup_steps": warmup}
    handle = build_optimizer(name, model, family=family, hparams=hparams, **info.defaults[family])
    base_lrs = [g["lr"] for g in handle.optimizer.param_groups]
    x, y = digits
    gen = torch.Generator().manual_seed(0)
    losses = []
    for step in range(STEPS_OVERRIDE.get((name, model_name), STEPS)):
        if handle.uses_lr_schedule and warmup:
            for group, base in zip(handle.optimizer.param_groups, base_lrs):
                group["lr"] = base * min(1.0, (step + 1) / warmup)
        idx = torch.randint(0, len(x), (BATCH,), generator=gen)
        handle.zero_grad()
        logits = model(x[idx])
        loss = F.cross_entropy(logits, y[idx])
        handle.backward(loss, logits)
        handle.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_trains_tiny_models(name: str, model_name: str, digits) -> None:
    losses = train_losses(name, model_name, digits)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.01, f"{name} on {model_name}: mean loss {first:.3f} -> {last:.3f}"


def test_registry_covers_the_papers_twenty_and_six_new() -> None:
    with PAPER_TABLE1.open() as f:
        table1_rows = [row[0] for row in csv.reader(f)][1:]
    assert table1_rows == PAPER_OPTIMIZERS
    by_paper = {info.paper_name: info for info in OPTIMIZERS}
    assert set(PAPER_OPTIMIZERS) <= set(by_paper)
    categories = {p: by_paper[p].category for p in PAPER_OPTIMIZERS}
    assert [p for p, c in categories.items() if c == "a"] == ["SGD-M", "SGDP", "LION"]
    assert [p for p, c in categories.items() if c == "d"] == ["AdaGrad", "AdaDelta", "RMSProp"]
    new = {info.name for info in OPTIMIZERS if info.category == "new"}
    assert new == {"muon", "adamw_schedulefree", "adopt", "soap", "prodigy", "mars"}
    assert OPTIMIZERS.get("SGD-M").name == "sgd" and OPTIMIZERS.get("sgdm").name == "sgd"
    rows = optimizer_table()
    assert len(rows) == len(OPTIMIZERS) == 26
    assert {"name": "adamw", "paper_name": "AdamW", "category": "b", "source": "torch.optim",
            "class": "torch.optim.AdamW", "classical_lr": 1e-3, "classical_wd": 0.05, "modern_lr": 1e-3,
            "modern_wd": 0.05} in rows


def test_sophia_hessian_estimate_is_nonzero_and_refreshed_every_k_steps(digits) -> None:
    k = 3
    torch.manual_seed(0)
    model = tiny_resnet()
    handle = build_optimizer("sophia", model, lr=1e-4, weight_decay=0.0, hparams={"update_period": k})
    x, y = digits[0][:64], digits[1][:64]
    head = model.fc.weight
    snapshots = []
    for _ in range(2 * k + 1):
        handle.zero_grad()
        logits = model(x)
        handle.backward(F.cross_entropy(logits, y), logits)
        handle.step()
        snapshots.append(handle.optimizer.state[head]["hessian_moment"].clone())
    assert snapshots[0].abs().sum() > 0
    changed = [not torch.equal(a, b) for a, b in zip(snapshots, snapshots[1:])]
    # refreshed on steps 1, k+1, 2k+1 (1-based): the moment changes exactly into steps k+1 and 2k+1
    assert changed == [step % k == 0 for step in range(1, 2 * k + 1)]
    assert handle.provenance["hessian"]["update_period"] == k


def test_sophia_estimate_is_rho_times_batch_times_squared_sampled_gradient(digits) -> None:
    torch.manual_seed(0)
    model = tiny_resnet()
    handle = build_optimizer("sophia", model, lr=1e-4, weight_decay=0.0, hparams={"rho": 0.5})
    logits = model(digits[0][:16])
    torch.manual_seed(1)
    estimate = handle.hessian.estimate(logits)
    torch.manual_seed(1)
    sampled = torch.distributions.Categorical(logits=logits.detach()).sample()
    grads = torch.autograd.grad(F.cross_entropy(logits, sampled), list(model.parameters()))
    by_param = dict(zip(handle.hessian.params, estimate))
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(by_param[p], 0.5 * 16 * g * g)


def test_lars_trust_ratio_gives_each_layer_its_own_step_size(digits) -> None:
    lr, eta = 1.0, 1e-3
    torch.manual_seed(0)
    model = tiny_resnet()
    # weight decay 0: the trust ratio must stay on (timm turns it off unless always_adapt)
    handle = build_optimizer("lars", model, lr=lr, weight_decay=0.0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    handle.zero_grad()
    logits = model(digits[0][:64])
    handle.backward(F.cross_entropy(logits, digits[1][:64]), logits)
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    handle.step()
    effective = {}
    for name, p in model.named_parameters():
        w_norm, g_norm = before[name].norm(), grads[name].norm()
        if w_norm == 0 or g_norm == 0:
            continue
        step = (p.detach() - before[name]).norm()
        effective[name] = (step / g_norm).item()
        # first step, momentum buffer = trust-scaled gradient: |dw| / |g| = lr * eta * |w| / |g|
        assert effective[name] == pytest.approx(lr * eta * w_norm.item() / (g_norm.item() + 1e-8), rel=1e-4)
        assert (step / w_norm).item() == pytest.approx(lr * eta, rel=1e-4)
    assert max(effective.values()) / min(effective.values()) > 10


def test_default_adamw_grid_is_5x5_consecutive_log_values_around_the_default() -> None:
    space = search_space("adamw", "modern")
    assert space.lr == [2.5e-4, 5e-4, 1e-3, 2e-3, 4e-3]
    assert space.weight_decay == [0.0125, 0.025, 0.05, 0.1, 0.2]
    for grid in (space.lr, space.weight_decay):
        assert all(b / a == pytest.approx(2.0) for a, b in zip(grid, grid[1:]))
    assert space.extras == {"beta2": [0.99, 0.999]}


def test_grid_edge_cases() -> None:
    # even count: the extra point goes below the default
    assert search_space("sgd", "classical", lr_points=4, lr_step=10).lr == [0.001, 0.01, 0.1, 1.0]
    # zero default, coupled L2: 0 plus values ending at 1e-4; decoupled: ending at 1e-2
    assert search_space("adam", "classical").weight_decay == [0.0, 1.25e-5, 2.5e-5, 5e-5, 1e-4]
    assert search_space("lion", "classical", wd_points=3, wd_step=10).weight_decay == [0.0, 1e-3, 1e-2]
    assert search_space("adam", "classical", wd_points=1).weight_decay == [0.0]
    assert search_space("sgd", "classical", lr_step=3).lr == [0.01111, 0.03333, 0.1, 0.3, 0.9]
    with pytest.raises(SpecError, match="family"):
        search_space("adamw", "vintage")
    with pytest.raises(SpecError, match="search.lr_step"):
        search_space("adamw", "modern", lr_step=1.0)


def test_weight_decay_policy_excludes_1d_tensors_and_no_weight_decay_names() -> None:
    resnet = tiny_resnet()
    # decayed: stem conv, 8 block convs, 4 downsample convs (the 64-wide stem feeds an 8-wide layer1), fc.weight;
    # not decayed: 13 BatchNorms x (weight, bias) and fc.bias
    for wd in (0.0, 0.05):
        handle = build_optimizer("adamw", resnet, lr=1e-3, weight_decay=wd)
        assert (handle.provenance["decayed_tensors"], handle.provenance["non_decayed_tensors"]) == (14, 27)
    assert build_optimizer("adamw", resnet, lr=1e-3, weight_decay=0.05, weight_decay_policy="decay_all"
                           ).provenance["non_decayed_tensors"] == 0
    vit = tiny_vit()
    groups = weight_decay_groups(vit, 0.05, "no_decay_1d")
    decayed = {id(p) for g in groups if not g["decay_excluded"] for p in g["params"]}
    names = {n for n, p in vit.named_parameters() if id(p) in decayed}
    # pos_embed is 3-D but listed by model.no_weight_decay(); per block: qkv, proj, fc1, fc2 weights
    assert names == {"patch_embed.proj.weight", "head.weight"} | {
        f"blocks.{i}.{m}.weight" for i in range(2) for m in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")}
    assert all(g["weight_decay"] == (0.0 if g["decay_excluded"] else 0.05) for g in groups)
    with pytest.raises(SpecError, match="weight_decay_policy.*valid choices: no_decay_1d, decay_all"):
        weight_decay_groups(vit, 0.05, "decay_some")


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_a_specs_argument_check_groups_its_parameter_as_the_policy_does(name: str) -> None:
    # check_hyperparameters builds each optimizer over one_weight_group (without timm, which the policy imports)
    from bocb.optim._handle import one_weight_group
    from bocb.optim._param_groups import stem_and_head

    info, model = OPTIMIZERS.get(name), nn.Linear(1, 1, bias=False)
    fallback = stem_and_head(model) if info.fallback_stem_and_head else []
    (policy,) = weight_decay_groups(model, 0.0, "no_decay_1d", fallback)
    check = one_weight_group(info)
    assert {k: v for k, v in policy.items() if k not in ("params", "decay_excluded")} == \
        {k: v for k, v in check.items() if k != "params"}
    assert [p.shape for p in policy["params"]] == [p.shape for p in check["params"]]


def test_every_hyper_parameter_is_explicit_and_recorded() -> None:
    model = tiny_resnet()
    sgd = build_optimizer("sgd-m", model, lr=0.1, weight_decay=1e-4).provenance
    assert sgd["class"] == "torch.optim.sgd.SGD"
    assert sgd["kwargs"] == {"lr": 0.1, "weight_decay": 1e-4, "momentum": 0.9, "dampening": 0.0,
                             "nesterov": False}
    lamb = build_optimizer("lamb", model, lr=1e-3, weight_decay=0.02)
    assert lamb.optimizer.defaults["max_grad_norm"] is None and lamb.optimizer.defaults["always_adapt"]
    prodigy = build_optimizer("prodigy", model, lr=1.0, weight_decay=0.0).provenance
    assert prodigy["library"] == "pytorch_optimizer" and prodigy["kwargs"]["growth_rate"] == "inf"
    json.dumps(prodigy, allow_nan=False)
    adamw = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.05, hparams={"beta2": 0.99})
    assert adamw.optimizer.param_groups[0]["betas"] == (0.9, 0.99)
    adan = build_optimizer("adan", model, lr=1e-3, weight_decay=0.02, hparams={"beta2": 0.9})
    assert adan.optimizer.param_groups[0]["betas"] == (0.98, 0.9, 0.99)


def test_bad_inputs_raise_one_line_spec_errors() -> None:
    model = tiny_resnet()
    with pytest.raises(SpecError, match=r"optimizers\.adamw\.momentum: unknown hyper-parameter; valid choices: "
                                        r"amsgrad, beta1, beta2, betas, eps"):
        build_optimizer("adamw", model, lr=1e-3, weight_decay=0.05, hparams={"momentum": 0.9})
    with pytest.raises(SpecError, match="did you mean 'adamw'"):
        build_optimizer("adamww", model, lr=1e-3, weight_decay=0.05)
    with pytest.raises(SpecError, match="lr: must be > 0"):
        build_optimizer("sgd", model, lr=0.0, weight_decay=0.0)
    with pytest.raises(SpecError, match="weight_decay: must be >= 0"):
        build_optimizer("sgd", model, lr=0.1, weight_decay=-1.0)


def test_schedule_free_switches_weights_between_train_and_eval(digits) -> None:
    torch.manual_seed(0)
    model = tiny_vit()
    handle = build_optimizer("adamw_schedulefree", model, lr=2.5e-3, weight_decay=0.0, family="modern")
    assert not handle.uses_lr_schedule
    for _ in range(3):
        handle.zero_grad()
        logits = model(digits[0][:32])
        handle.backward(F.cross_entropy(logits, digits[1][:32]), logits)
        handle.step()
    train_point = model.head.weight.detach().clone()
    handle.eval()
    assert not torch.equal(model.head.weight, train_point)
    handle.train()
    torch.testing.assert_close(model.head.weight.detach(), train_point)


@pytest.mark.parametrize("model_name", ["resnet", "vit"])
def test_muon_keeps_the_stem_and_the_classifier_on_its_adamw_fallback(model_name: str, digits) -> None:
    torch.manual_seed(0)
    model = MODELS[model_name][0]()
    handle = build_optimizer("muon", model, lr=1e-3, weight_decay=0.05, family=MODELS[model_name][1])
    logits = model(digits[0][:32])
    handle.backward(F.cross_entropy(logits, digits[1][:32]), logits)
    handle.step()
    on_muon = {n for n, p in model.named_parameters() if handle.optimizer.state[p]["use_muon"]}
    stem, head = ("conv1.weight", "fc.weight") if model_name == "resnet" else ("patch_embed.proj.weight", "head.weight")
    assert stem not in on_muon and head not in on_muon
    layers = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    assert on_muon == layers - {stem, head}  # every hidden layer's matrix (or conv kernel) is orthogonalised
    fallback = {stem, head, stem.replace("weight", "bias"), head.replace("weight", "bias")}
    assert set(handle.provenance["fallback_parameters"]) == fallback & dict(model.named_parameters()).keys()
