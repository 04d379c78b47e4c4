"""The optimizer zoo: one frozen :class:`OptimizerInfo` per optimizer (after timm's ``OptimInfo``).

Every class comes from a maintained library (torch.optim, timm.optim, pytorch_optimizer,
schedulefree); nothing here re-implements an update rule. ``fixed`` sets every hyper-parameter
explicitly because library defaults differ (timm's SGD is Nesterov, RMSprop alpha/momentum,
AdaBelief eps, LAMB/LARS trust ratio off at weight decay 0, LAMB's internal clipping...).
The choices and the reasons are in docs/optimizers.md.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bocb.registry import Registry

Category = Literal["a", "b", "c", "d", "new", "user"]


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    paper_name: str
    category: Category
    source: str
    cls: str
    defaults: dict[str, dict[str, float]]
    fixed: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, list[Any]] = field(default_factory=dict)
    # The paper's Table A2 weight-decay type. True, decoupled: the decay bypasses the adaptive update, p shrinks by
    # lr*wd*p (AdamW style) or as the method defines (Adan proximally, AdamP/SGDP scaled by wd_ratio, LAMB inside
    # its trust ratio, NovoGrad after its layer-wise normalisation). False, L2: wd*p is added to the gradient.
    decoupled_decay: bool = False
    uses_lr_schedule: bool = True  # False: the engine must not anneal or warm up the lr (schedule-free)
    hessian: Literal["gnb"] | None = None  # 'gnb': Sophia-G's Gauss-Newton-Bartlett estimate, see _handle.py
    internal_clipping: str = "none"  # any clipping the library does inside step(), recorded per trial
    # True: a hybrid (Muon) whose authors keep the input layer and the classifier on its fallback (AdamW)
    fallback_stem_and_head: bool = False
    note: str = ""
    # What the paper specifies that no maintained library provides, and what bocb builds instead
    # (docs/optimizers.md lists every one; docs/paper-fidelity.md the paper's settings)
    deviation: str = ""


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")

ADAM_BETAS = (0.9, 0.999)


def _same(lr: float, weight_decay: float) -> dict[str, dict[str, float]]:
    """Identical defaults for both recipe families."""
    return {f: {"lr": lr, "weight_decay": weight_decay} for f in ("classical", "modern")}


def _per_family(classical: tuple[float, float], modern: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {
        "classical": {"lr": classical[0], "weight_decay": classical[1]},
        "modern": {"lr": modern[0], "weight_decay": modern[1]},
    }


def _register(info: OptimizerInfo, *aliases: str) -> None:
    OPTIMIZERS.register(info, aliases=aliases)


# ---- (a) fixed learning rate + momentum --------------------------------------------------
_register(OptimizerInfo(
    name="sgd", paper_name="SGD-M", category="a", source="torch.optim", cls="torch.optim.SGD",
    defaults=_same(0.1, 1e-4),
    fixed={"momentum": 0.9, "dampening": 0.0, "nesterov": False},
    extras={"momentum": [0.8, 0.9, 0.95]},
    note="heavy-ball momentum 0.9, no Nesterov (timm's 'sgd' is Nesterov)",
), "sgd-m", "sgd_m", "sgdm", "momentum")
_register(OptimizerInfo(
    name="sgdp", paper_name="SGDP", category="a", source="timm.optim", cls="timm.optim.SGDP",
    defaults=_same(0.1, 1e-4), decoupled_decay=True,
    fixed={"momentum": 0.9, "dampening": 0.0, "nesterov": False, "eps": 1e-8, "delta": 0.1, "wd_ratio": 0.1},
    extras={"momentum": [0.8, 0.9, 0.95]},
    note="Nesterov off to match SGD-M (timm's factory turns it on); decay p *= 1 - lr*wd*wd_ratio/(1-momentum), "
         "wd_ratio where the projection applies (Heo et al.)",
))
_register(OptimizerInfo(
    name="lion", paper_name="LION", category="a", source="timm.optim", cls="timm.optim.Lion",
    defaults=_per_family((1e-4, 0.0), (1e-4, 0.5)), decoupled_decay=True,
    fixed={"betas": (0.9, 0.99)},
    extras={"beta2": [0.98, 0.99]},
    note="modern wd 0.5 = AdamW's 0.05 x 10 at a 10x smaller lr (Lion paper)",
))

# ---- (b) adaptive learning rate + momentum -----------------------------------------------
_register(OptimizerInfo(
    name="adam", paper_name="Adam", category="b", source="torch.optim", cls="torch.optim.Adam",
    defaults=_same(1e-3, 0.0), fixed={"betas": ADAM_BETAS, "eps": 1e-8, "amsgrad": False},
    extras={"beta2": [0.99, 0.999]},
))
_register(OptimizerInfo(
    name="adamax", paper_name="Adamax", category="b", source="torch.optim", cls="torch.optim.Adamax",
    defaults=_same(2e-3, 0.0), fixed={"betas": ADAM_BETAS, "eps": 1e-8},
    extras={"beta2": [0.99, 0.999]},
))
_register(OptimizerInfo(
    name="nadam", paper_name="NAdam", category="b", source="torch.optim", cls="torch.optim.NAdam",
    defaults=_same(1e-3, 0.0),
    fixed={"betas": ADAM_BETAS, "eps": 1e-8, "momentum_decay": 4e-3, "decoupled_weight_decay": False},
    extras={"beta2": [0.99, 0.999]},
))
_register(OptimizerInfo(
    name="adamw", paper_name="AdamW", category="b", source="torch.optim", cls="torch.optim.AdamW",
    defaults=_same(1e-3, 0.05), decoupled_decay=True,
    fixed={"betas": ADAM_BETAS, "eps": 1e-8, "amsgrad": False},
    extras={"beta2": [0.99, 0.999]},
))
_register(OptimizerInfo(
    name="lamb", paper_name="LAMB", category="b", source="timm.optim", cls="timm.optim.Lamb",
    defaults=_per_family((1e-3, 0.02), (5e-3, 0.02)), decoupled_decay=True,
    fixed={"betas": ADAM_BETAS, "eps": 1e-6, "bias_correction": True, "grad_averaging": True,
           "max_grad_norm": None, "trust_clip": False, "always_adapt": True, "decoupled_decay": False},
    extras={"beta2": [0.99, 0.999]},
    note="trust ratio on every tensor even at wd 0 (always_adapt); timm's internal global clip 1.0 off; decay as "
         "LAMB defines it (wd*p added to the Adam ratio inside the trust ratio; timm's decoupled_decay=False)",
))
_register(OptimizerInfo(
    name="radam", paper_name="RAdam", category="b", source="torch.optim", cls="torch.optim.RAdam",
    defaults=_same(1e-3, 0.0), decoupled_decay=True,
    fixed={"betas": ADAM_BETAS, "eps": 1e-8, "decoupled_weight_decay": True},
    extras={"beta2": [0.99, 0.999]},
))
_register(OptimizerInfo(
    name="adamp", paper_name="AdamP", category="b", source="timm.optim", cls="timm.optim.AdamP",
    defaults=_per_family((1e-3, 0.0), (1e-3, 0.05)), decoupled_decay=True,
    fixed={"betas": ADAM_BETAS, "eps": 1e-8, "delta": 0.1, "wd_ratio": 0.1, "nesterov": False},
    extras={"beta2": [0.99, 0.999]},
))
_register(OptimizerInfo(
    name="adan", paper_name="Adan", category="b", source="timm.optim", cls="timm.optim.Adan",
    defaults=_same(1e-3, 0.02), decoupled_decay=True,
    fixed={"betas": (0.98, 0.92, 0.99), "eps": 1e-8, "no_prox": False},
    note="timm's Adan has no internal clipping (the authors' copy clipped at 5)",
))
_register(OptimizerInfo(
    name="adabound", paper_name="AdaBound", category="b", source="pytorch_optimizer",
    cls="pytorch_optimizer.AdaBound", defaults=_same(1e-3, 0.0), decoupled_decay=True,
    fixed={"final_lr": 0.1, "gamma": 1e-3, "betas": ADAM_BETAS, "eps": 1e-8, "weight_decouple": True,
           "fixed_decay": False, "ams_bound": False},
    extras={"final_lr": [0.01, 0.1, 0.5]},
    internal_clipping="step size clipped to [final_lr*(1-1/(gamma*t+1)), final_lr*(1+1/(gamma*t))], "
                      "bounds scaled by lr/initial lr (they follow the schedule)",
    note="decoupled decay p *= 1 - lr*wd (weight_decouple; the authors' AdaBoundW decayed without the lr factor)",
))

# ---- (c) estimated learning rate + momentum ----------------------------------------------
_register(OptimizerInfo(
    name="lars", paper_name="LARS", category="c", source="timm.optim", cls="timm.optim.Lars",
    defaults=_same(1.0, 1e-4),
    fixed={"momentum": 0.9, "dampening": 0.0, "nesterov": False, "trust_coeff": 1e-3, "eps": 1e-8,
           "trust_clip": False, "always_adapt": True},
    extras={"momentum": [0.8, 0.9, 0.95]},
    note="layer-wise trust ratio eta*|w|/(|g|+wd*|w|) on every tensor even at wd 0 (always_adapt); "
         "lr 1.0 because the per-step relative change is lr*eta",
))
_register(OptimizerInfo(
    name="adafactor", paper_name="AdaFactor", category="c", source="timm.optim", cls="timm.optim.Adafactor",
    defaults=_per_family((1e-3, 0.0), (1e-3, 0.05)), decoupled_decay=True,
    fixed={"betas": (0.9, 0.999), "eps": 1e-30, "eps_scale": 1e-3, "clip_threshold": 1.0, "decay_rate": -0.8,
           "scale_parameter": True, "warmup_init": False, "min_dim_size_to_factor": 16},
    internal_clipping="update RMS clipped at clip_threshold 1.0 (part of Adafactor)",
    note="explicit lr: the step is lr x the update (RMS clipped at 1), not scaled by the tensor's RMS (timm scales "
         "by RMS only with lr=None, the relative step; scale_parameter is inert here); first moment beta1 0.9; "
         "second moment on Adafactor's decay_rate -0.8 schedule (beta2 unused); decoupled decay p *= 1 - lr*wd",
))
_register(OptimizerInfo(
    name="adabelief", paper_name="AdaBelief", category="c", source="timm.optim", cls="timm.optim.AdaBelief",
    defaults=_per_family((1e-3, 0.0), (1e-3, 0.05)), decoupled_decay=True,
    fixed={"betas": ADAM_BETAS, "eps": 1e-8, "amsgrad": False, "decoupled_decay": True, "fixed_decay": False,
           "rectify": False, "degenerated_to_sgd": True},
    extras={"eps": [1e-16, 1e-12, 1e-8]},
    note="eps 1e-8 as the authors (timm default 1e-16), rectify off (timm default on)",
))
_register(OptimizerInfo(
    name="novograd", paper_name="NovoGrad", category="c", source="timm.optim", cls="timm.optim.NvNovoGrad",
    defaults=_same(1e-3, 0.0), decoupled_decay=True,
    fixed={"betas": (0.95, 0.98), "eps": 1e-8, "grad_averaging": False, "amsgrad": False,
           "decoupled_decay": False},
    extras={"beta2": [0.98, 0.999]},
    note="decay as NovoGrad defines it: wd*p added after the layer-wise normalisation, into the momentum "
         "(timm's decoupled_decay=False)",
))
_register(OptimizerInfo(
    name="sophia", paper_name="Sophia", category="c", source="pytorch_optimizer",
    cls="pytorch_optimizer.SophiaH", defaults=_same(1e-4, 0.1), decoupled_decay=True, hessian="gnb",
    fixed={"betas": (0.965, 0.99), "rho": 0.04, "p": 1.0, "update_period": 10, "eps": 1e-12,
           "weight_decouple": True, "fixed_decay": False},
    extras={"rho": [0.01, 0.04, 0.1]},
    internal_clipping="per-coordinate update clipped to [-1, 1] x lr (Sophia's clip)",
    note="Sophia-G: Gauss-Newton-Bartlett estimate rho*B*g_hat^2 from sampled labels every 10 steps, "
         "fed to pytorch_optimizer's SophiaH update with p = 1 (equals SophiaG's update)",
    deviation="no maintained library has SophiaG (timm: none; pytorch_optimizer: SophiaH, Hutchinson estimate): "
              "its Hessian estimate is written here (bocb.optim._handle.GaussNewtonBartlett) and fed to SophiaH's "
              "update, which then equals SophiaG's",
), "sophiag", "sophia-g")

# ---- (d) adaptive learning rate, current gradient ----------------------------------------
_register(OptimizerInfo(
    name="adagrad", paper_name="AdaGrad", category="d", source="torch.optim", cls="torch.optim.Adagrad",
    defaults=_same(1e-2, 0.0), fixed={"lr_decay": 0.0, "initial_accumulator_value": 0.0, "eps": 1e-10},
))
_register(OptimizerInfo(
    name="adadelta", paper_name="AdaDelta", category="d", source="torch.optim", cls="torch.optim.Adadelta",
    defaults=_same(1.0, 0.0), fixed={"rho": 0.9, "eps": 1e-6},
    extras={"rho": [0.9, 0.95]},
))
_register(OptimizerInfo(
    name="rmsprop", paper_name="RMSProp", category="d", source="torch.optim", cls="torch.optim.RMSprop",
    defaults=_same(1e-3, 0.0), fixed={"alpha": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False},
    extras={"alpha": [0.9, 0.99]},
    note="no momentum (category d); timm's factory would use alpha 0.9, momentum 0.9",
))

# ---- beyond the paper --------------------------------------------------------------------
_register(OptimizerInfo(
    name="muon", paper_name="Muon", category="new", source="timm.optim", cls="timm.optim.Muon",
    defaults=_same(1e-3, 0.05), decoupled_decay=True, fallback_stem_and_head=True,
    fixed={"momentum": 0.95, "nesterov": True, "ns_steps": 5, "ns_coefficients": "quintic",
           "adjust_lr_fn": "match_rms_adamw", "conv_mode": "flatten", "betas": (0.9, 0.95), "eps": 1e-7},
    note="orthogonalised momentum for hidden >= 2-D weights (convs flattened); AdamW fallback for 1-D "
         "tensors, the stem (input layer) and the classifier; lr matched to AdamW's update RMS, so AdamW's lr applies",
))
_register(OptimizerInfo(
    name="adamw_schedulefree", paper_name="AdamW-ScheduleFree", category="new", source="schedulefree",
    cls="schedulefree.AdamWScheduleFree", defaults=_same(2.5e-3, 0.05), decoupled_decay=True,
    uses_lr_schedule=False,
    fixed={"betas": ADAM_BETAS, "eps": 1e-8, "warmup_steps": 0, "r": 0.0, "weight_lr_power": 2.0},
    note="no lr schedule; warm up via hparams warmup_steps; call train()/eval() around evaluation",
), "schedulefree", "sf_adamw")
_register(OptimizerInfo(
    name="adopt", paper_name="ADOPT", category="new", source="timm.optim", cls="timm.optim.Adopt",
    defaults=_same(1e-3, 0.05), decoupled_decay=True,
    fixed={"betas": (0.9, 0.9999), "eps": 1e-6, "clip_exp": 0.333, "decoupled": True},
    internal_clipping="normalised gradient clipped at step**0.333 (part of ADOPT)",
))
_register(OptimizerInfo(
    name="soap", paper_name="SOAP", category="new", source="pytorch_optimizer", cls="pytorch_optimizer.SOAP",
    defaults=_same(3e-3, 0.01), decoupled_decay=True,
    fixed={"betas": (0.95, 0.95), "shampoo_beta": None, "precondition_frequency": 10,
           "max_precondition_dim": 10000, "merge_dims": False, "precondition_1d": False, "correct_bias": True,
           "normalize_gradient": False, "data_format": "channels_first", "eps": 1e-8},
))
_register(OptimizerInfo(
    name="prodigy", paper_name="Prodigy", category="new", source="pytorch_optimizer",
    cls="pytorch_optimizer.Prodigy", defaults=_same(1.0, 0.05), decoupled_decay=True,
    fixed={"betas": ADAM_BETAS, "beta3": None, "d0": 1e-6, "d_coef": 1.0, "growth_rate": float("inf"),
           "weight_decouple": True, "fixed_decay": False, "bias_correction": False, "safeguard_warmup": True,
           "eps": 1e-8},
    extras={"d_coef": [0.5, 1.0, 2.0]},
    note="lr is a multiplier of the estimated step d; cosine-annealed as its authors recommend, "
         "safeguard_warmup on because recipes warm up",
))
_register(OptimizerInfo(
    name="mars", paper_name="MARS", category="new", source="timm.optim", cls="timm.optim.Mars",
    defaults=_same(3e-3, 0.05), decoupled_decay=True,
    fixed={"betas": (0.9, 0.99), "eps": 1e-8, "gamma": 0.025, "mars_type": "adamw", "optimize_1d": False,
           "lr_1d_factor": 1.0},
    internal_clipping="variance-reduced gradient c_t rescaled to norm 1 per tensor when larger (part of MARS)",
    note="MARS-AdamW on >= 2-D tensors, plain AdamW on 1-D",
))
