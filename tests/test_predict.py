"""bocb.predict: JS⁰ on constructed spectra with known answers, and stochastic Lanczos quadrature against the
exact eigendecomposition of a small network's Hessian (torch.autograd.functional.hessian)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from bocb.predict import Quadrature, Settings, block_hvps, distance, estimate, js0, lanczos, quadrature
from bocb.spec import DatasetSpec


def spike(at: float, probes: int = 1, steps: int = 4) -> Quadrature:
    """A density with all its mass at ``at``."""
    weights = np.zeros((probes, steps))
    weights[:, 0] = 1.0
    return Quadrature(np.full((probes, steps), at), weights)


def spread(values: list[float]) -> Quadrature:
    """A density with equal mass at each of ``values``."""
    return Quadrature(np.array([values]), np.full((1, len(values)), 1.0 / len(values)))


def test_js0_of_identical_blocks_is_zero() -> None:
    block = spread([-1.0, 0.0, 0.5, 3.0])
    assert js0([block, block, block]) == pytest.approx(0.0, abs=1e-12)


def test_js0_of_disjoint_spectra_is_the_maximum_of_the_base_2_distance() -> None:
    assert js0([spread([0.0, 0.1]), spread([5.0, 5.2])]) == pytest.approx(1.0, abs=1e-9)
    # two identical blocks and one disjoint from both: pairs at 0, 1 and 1
    assert js0([spike(0.0), spike(0.0), spike(1.0)]) == pytest.approx(2 / 3, abs=1e-9)


def test_js0_does_not_change_when_the_loss_is_rescaled() -> None:
    blocks = [spread([0.0, 1.0, 2.0]), spread([0.0, 0.5, 4.0]), spread([1.0, 3.0])]
    scaled = [Quadrature(100.0 * b.nodes, b.weights) for b in blocks]
    assert 0.05 < js0(blocks) < 0.95
    assert js0(scaled) == pytest.approx(js0(blocks), rel=1e-9)


def test_js0_needs_two_blocks() -> None:
    with pytest.raises(ValueError, match="two blocks"):
        js0([spike(0.0)])


def test_lanczos_of_a_diagonal_operator_finds_its_eigenvalues() -> None:
    diagonal = torch.tensor([-2.0, 0.5, 1.0, 3.0, 7.0], dtype=torch.float64)
    q = quadrature(lambda v: diagonal * v, 5, probes=2, steps=5, generator=torch.Generator().manual_seed(0),
                   dtype=torch.float64)
    for nodes in q.nodes:
        np.testing.assert_allclose(np.sort(nodes), diagonal.numpy(), atol=1e-10)
    np.testing.assert_allclose(q.weights.sum(axis=1), 1.0, atol=1e-12)


def test_lanczos_stops_when_the_krylov_space_is_exhausted() -> None:
    # a start vector inside a 2-dimensional invariant subspace: 2 steps span it, the third would divide by ~0
    diagonal = torch.tensor([1.0, 4.0, 9.0], dtype=torch.float64)
    alphas, betas = lanczos(lambda v: diagonal * v, torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64), steps=3)
    assert len(alphas) == 2 and len(betas) == 1


class Small(nn.Module):
    """A 2-layer network small enough for the exact Hessian: blocks of 24 and 18 weights."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6, bias=False)
        self.fc2 = nn.Linear(6, 3, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


@pytest.fixture(scope="module")
def small() -> tuple[Small, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The model, its per-block Hessian-vector products' exact counterparts (the diagonal blocks of the full
    Hessian from torch.autograd.functional.hessian), and the data."""
    torch.manual_seed(0)
    model = Small().double()
    x, y = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    names = ["fc1.weight", "fc2.weight"]
    shapes = [model.get_parameter(n).shape for n in names]
    sizes = [math.prod(s) for s in shapes]

    def loss_of(flat: torch.Tensor) -> torch.Tensor:
        w1, w2 = (p.reshape(s) for p, s in zip(flat.split(sizes), shapes, strict=True))
        return nn.functional.cross_entropy(torch.tanh(x @ w1.T) @ w2.T, y)

    flat = torch.cat([model.get_parameter(n).detach().reshape(-1) for n in names])
    full = torch.autograd.functional.hessian(loss_of, flat)
    bounds = np.cumsum([0, *sizes])
    exact = {n: full[a:b, a:b] for n, a, b in zip(names, bounds[:-1], bounds[1:], strict=True)}
    return model, exact, {"x": x, "y": y}


def slq_of(small: tuple, name: str, steps: int, seed: int) -> Quadrature:
    model, _, data = small
    loss = nn.functional.cross_entropy(model(data["x"]), data["y"])
    params = {n: p for n, p in model.named_parameters()}
    hvp = block_hvps(loss, params)[name]
    return quadrature(hvp, params[name].numel(), probes=1, steps=steps,
                      generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", ["fc1.weight", "fc2.weight"])
def test_full_lanczos_nodes_are_the_exact_eigenvalues_of_the_diagonal_block(small: tuple, name: str) -> None:
    exact = torch.linalg.eigvalsh(small[1][name]).numpy()
    q = slq_of(small, name, steps=exact.size, seed=1)
    # every node is an eigenvalue of the block (not of the whole Hessian), every weight is positive where
    # the node was found, and the largest and smallest eigenvalues are among the nodes
    found = q.nodes[0][q.weights[0] > 1e-12]
    assert np.min(np.abs(found[:, None] - exact[None, :]), axis=1).max() < 1e-8
    assert found.max() == pytest.approx(exact.max(), abs=1e-8)
    assert found.min() == pytest.approx(exact.min(), abs=1e-8)


@pytest.mark.parametrize("steps", [2, 3, 5])
def test_quadrature_moments_are_exact_up_to_degree_2m_minus_1(small: tuple, steps: int) -> None:
    """Gauss quadrature with m Lanczos steps integrates polynomials of degree <= 2m - 1 exactly:
    sum_i w_i node_i^k = u^T H^k u for the unit start vector u."""
    name = "fc1.weight"
    hessian = small[1][name]
    q = slq_of(small, name, steps=steps, seed=2)
    u = torch.randn(hessian.shape[0], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    u = u / u.norm()
    for k in range(1, 2 * steps):
        exact = float(u @ torch.linalg.matrix_power(hessian, k) @ u)
        assert q.moment(k) == pytest.approx(exact, rel=1e-7, abs=1e-12), k


def test_many_probes_estimate_the_normalised_trace(small: tuple) -> None:
    hessian = small[1]["fc2.weight"]
    model, _, data = small
    loss = nn.functional.cross_entropy(model(data["x"]), data["y"])
    hvp = block_hvps(loss, dict(model.named_parameters()))["fc2.weight"]
    q = quadrature(hvp, hessian.shape[0], probes=400, steps=4, generator=torch.Generator().manual_seed(3),
                   dtype=torch.float64)
    n = hessian.shape[0]
    assert q.moment(1) == pytest.approx(float(torch.trace(hessian)) / n, rel=0.1)
    assert q.moment(2) == pytest.approx(float(torch.trace(hessian @ hessian)) / n, rel=0.15)


def test_estimate_on_a_zoo_backbone_is_a_distance_and_repeats_at_a_seed() -> None:
    dataset = DatasetSpec(name="digits", image_size=16)
    settings = Settings(steps=3, batches=1, batch_size=16)
    first = estimate("alexnet", dataset, seed=0, settings=settings)
    again = estimate("alexnet", dataset, seed=0, settings=settings)
    assert 0.0 < first.js0 < 1.0
    assert first.js0 == pytest.approx(again.js0, rel=1e-6)
    assert len(first.blocks) >= 2 and all(not name.endswith("bias") for name in first.blocks)


def test_js0_of_blocks_equal_up_to_rounding_is_zero_not_nan() -> None:
    # scipy's divergence of two densities equal up to rounding can come out a tiny negative number (NaN
    # distance): several blocks whose Hessian is ~0 at initialisation (zero-initialised layer scales) do this
    flat = [spike(1e-9 * i) for i in range(4)] + [spike(1.0)]
    assert js0(flat) == pytest.approx(4 / 10, abs=1e-6)


def test_distance_of_densities_equal_up_to_rounding_is_zero() -> None:
    rng = np.random.default_rng(0)
    pairs = [(p, p * (1 + 1e-12 * rng.standard_normal(50))) for p in rng.random((20, 50))]
    assert all(distance(p, q) == 0.0 or distance(p, q) < 1e-5 for p, q in pairs)
    assert not any(math.isnan(distance(p, q)) for p, q in pairs)
    with pytest.raises(ValueError, match="not finite"):
        distance(np.array([0.5, np.nan]), np.array([0.5, 0.5]))
