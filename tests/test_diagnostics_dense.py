"""Every number run_diagnostics reports, checked against a dense float64 computation.

The reference (tests/dense_reference.py) builds G, F = G^T G / n with its d x d
eigendecomposition, and H of the mean fine-tune loss densely on a tiny Llama, from the
definitions of the diagnostics, without calling riskgate's diagnostics helpers.

The tests use two models. transformers 5.25's Llama computes RMSNorm and the eager-attention
softmax in float32 even when its weights are float64. Second derivatives by different routes
(reverse over reverse in riskgate, forward over reverse here), or of batches padded differently,
then differ by about 1e-7 relative. So the main `layer` scenario runs a model patched to compute
in float64 throughout (`compute_in_float64`), where every number agrees to RTOL. The `tied`
scenario runs the model as transformers builds it. There, quantities that need H agree to
STOCK_CURVATURE_RTOL.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math

import pytest
import torch

from dense_reference import (
    DenseFisher,
    DenseForecast,
    DenseUpdate,
    compute_in_float64,
    dense_fisher,
    dense_forecast,
    dense_update,
    first_step_reaching,
    flat_parameters,
    gradient_matrix,
    hessian_matrix,
    hessian_vector_product,
    horizon_by_search,
    noise_variance,
    random_sequences,
    sequence_loss,
)
from riskgate.budget import Deadline
from riskgate.diagnostics.engine import DiagnosticsResult, run_diagnostics
from riskgate.diagnostics.forecast import ForecastInputs, evaluate_forecast, quartic_forecast
from riskgate.diagnostics.gradients import make_batch, sequence_losses
from riskgate.diagnostics.settings import DiagnosticSettings, Optimizer
from riskgate.errors import AnalysisError
from tiny_models import build_model

RTOL = 1e-9
STOCK_CURVATURE_RTOL = 1e-6
INDEPENDENCE_RTOL = 1e-10
PAD_TOKEN_ID = 0
SAFETY_COUNT = 10
FINETUNE_COUNT = 6
REFERENCE_STEPS = 5_000
"""Steps over which the reference forecast is evaluated; the engine's search range must fit."""

LAYER_SCOPE = [
    "model.layers.1.self_attn.q_proj.weight",
    "model.layers.1.self_attn.k_proj.weight",
    "model.layers.1.self_attn.v_proj.weight",
    "model.layers.1.self_attn.o_proj.weight",
    "model.layers.1.mlp.down_proj.weight",
]
TIED_SCOPE = ["model.embed_tokens.weight", "model.layers.1.mlp.down_proj.weight"]


class Scenario:
    """A tiny model, a scope, safety and fine-tune sequences, and the dense reference for them."""

    def __init__(self, model, names, safety, finetune, *, dense_hessian: bool) -> None:
        self.model = model
        self.names = list(names)
        for name, parameter in model.named_parameters():
            parameter.requires_grad_(name in self.names)
        table = dict(model.named_parameters())
        self.params = [table[name] for name in self.names]
        self.shapes = [tuple(p.shape) for p in self.params]
        self.safety = list(safety)
        self.finetune = list(finetune)

        self.theta = flat_parameters(model, self.names)  # theta*, (d,)
        self.safety_gradients = gradient_matrix(model, self.names, self.theta, self.safety)  # G, (n, d)
        self.finetune_gradients = gradient_matrix(model, self.names, self.theta, self.finetune)  # (M, d)
        self.fisher: DenseFisher = dense_fisher(self.safety_gradients)
        self.hessian = hessian_matrix(model, self.names, self.theta, self.finetune) if dense_hessian else None

    def apply_hessian(self, vector: torch.Tensor) -> torch.Tensor:
        if self.hessian is not None:
            return self.hessian @ vector
        return hessian_vector_product(self.model, self.names, self.theta, self.finetune, vector)

    @functools.cache
    def update(self, optimizer: Optimizer, adam_epsilon: float = 1e-8) -> DenseUpdate:
        adam = optimizer is Optimizer.ADAMW
        return dense_update(self.finetune_gradients, self.apply_hessian, adam=adam, adam_epsilon=adam_epsilon)

    def losses(self, sequences) -> torch.Tensor:
        return torch.stack([sequence_loss(self.model, self.names, self.theta, s) for s in sequences]).detach()

    @functools.cache
    def run(self, settings: DiagnosticSettings) -> DiagnosticsResult:
        return run_diagnostics(
            self.model, self.params, self.names, self.safety, self.finetune, settings,
            pad_token_id=PAD_TOKEN_ID, deadline=Deadline(None),
        )


def make_settings(optimizer: Optimizer = Optimizer.SGD, **overrides) -> DiagnosticSettings:
    values = dict(
        rho=0.85, k_max=8, orthogonality_level=0.5, tau=1.0, learning_rate=1e-2, batch_size=4,
        planned_steps=40, optimizer=optimizer,
    )
    values.update(overrides)
    return DiagnosticSettings(**values)


def assert_close(quantity: str, actual: float, expected: float, rtol: float, scale: float = 0.0) -> None:
    """Assert |actual - expected| <= rtol * max(|expected|, scale); `scale` guards cancellation."""
    actual, expected = float(actual), float(expected)
    tolerance = rtol * max(abs(expected), scale)
    error = abs(actual - expected)
    assert error <= tolerance, (
        f"{quantity}: got {actual!r}, expected {expected!r}, error {error:.3g} > tolerance {tolerance:.3g}"
    )


@pytest.fixture(scope="module")
def layer() -> Scenario:
    """Attention and down projections of layer 1 (320 parameters) of a model computing in float64 throughout."""
    return Scenario(
        compute_in_float64(build_model()),
        LAYER_SCOPE,
        random_sequences(SAFETY_COUNT, seed=1),
        random_sequences(FINETUNE_COUNT, seed=2, first_index=100),
        dense_hessian=True,
    )


@pytest.fixture(scope="module")
def tied() -> Scenario:
    """The tied embedding and LM head matrix (259 x 4) and one projection (4 x 8) of a stock model.

    A hidden size of 4 (d = 1068) halves d against the default, so the d x d eigendecomposition stays fast.
    """
    return Scenario(
        build_model(hidden_size=4, intermediate_size=8, vocab_size=259, tie_word_embeddings=True),
        TIED_SCOPE,
        random_sequences(SAFETY_COUNT, seed=3),
        random_sequences(FINETUNE_COUNT, seed=4, first_index=100),
        dense_hessian=False,
    )


# Check 1: the Fisher subspace.


def test_fisher_rank_rule_setup(layer):
    """Guard: rho sits well between two cumulative sums, so k is not decided by rounding."""
    settings = make_settings()
    cumulative = torch.cumsum(layer.fisher.eigenvalues, 0) / layer.fisher.trace
    k = layer.fisher.rank(settings.rho, settings.k_max)

    assert k < settings.k_max
    assert float(cumulative[k - 1]) - settings.rho > 1e-3
    assert settings.rho - float(cumulative[k - 2]) > 1e-3


def test_fisher_spectrum_matches_dense(layer):
    settings = make_settings()
    subspace = layer.run(settings).sharpness.subspace
    reference = layer.fisher
    k = reference.rank(settings.rho, settings.k_max)
    top = float(reference.eigenvalues[0])

    assert subspace.k == k
    assert subspace.n == SAFETY_COUNT
    assert subspace.numerical_rank == reference.numerical_rank == SAFETY_COUNT
    assert subspace.spectrum.shape == (SAFETY_COUNT,)
    assert subspace.eigenvalues.shape == (k,)
    for j in range(SAFETY_COUNT):
        assert_close(f"lambda_{j + 1}", subspace.spectrum[j], reference.eigenvalues[j], RTOL)
    # F has rank n, so every eigenvalue past the n-th is rounding noise.
    assert float(reference.eigenvalues[SAFETY_COUNT:].abs().max()) < 1e-12 * top

    top_k_sum = float(reference.eigenvalues[:k].sum())
    assert_close("trace", subspace.trace, reference.trace, RTOL)
    assert_close("tail_mass", subspace.tail_mass, reference.trace - top_k_sum, RTOL)
    assert_close("explained_fraction", subspace.explained_fraction, top_k_sum / reference.trace, RTOL)
    assert_close("effective_rank", subspace.effective_rank, reference.trace / top, RTOL)


def test_gram_eigenvectors_match_dense(layer):
    """u_j = G v_j / sqrt(n lambda_j), up to the sign of each eigenvector."""
    subspace = layer.run(make_settings()).sharpness.subspace
    reference = layer.fisher

    for j in range(subspace.k):
        expected = layer.safety_gradients @ reference.eigenvectors[:, j]
        expected = expected / math.sqrt(SAFETY_COUNT * float(reference.eigenvalues[j]))
        actual = subspace.gram_eigenvectors[:, j]
        sign = 1.0 if float(actual @ expected) >= 0 else -1.0
        error = float((sign * actual - expected).abs().max())
        assert error < RTOL, f"u_{j + 1}: max entry error {error:.3g}"


def test_sensitivity_shares_match_dense(layer):
    settings = make_settings()
    sharpness = layer.run(settings).sharpness
    reference = layer.fisher
    k = reference.rank(settings.rho, settings.k_max)
    weights = reference.eigenvalues[:k] / reference.eigenvalues[:k].sum()  # (k,)

    rows = {row.tensor: row for row in sharpness.sensitivity}
    assert sorted(rows) == sorted(layer.names)
    offset = 0
    for name, shape in zip(layer.names, layer.shapes):
        numel = math.prod(shape)
        block = reference.eigenvectors[offset : offset + numel, :k]  # v_j restricted to the tensor
        expected = float((block.square().sum(dim=0) * weights).sum())
        assert rows[name].numel == numel
        assert_close(f"share of {name}", rows[name].share, expected, RTOL)
        offset += numel

    shares = [row.share for row in sharpness.sensitivity]
    assert shares == sorted(shares, reverse=True)
    assert_close("sum of shares", sum(shares), 1.0, RTOL)


def test_top_entries_match_dense(layer):
    """Entries of v_1..v_3: the five largest by magnitude, values up to the sign of v_j."""
    settings = make_settings()
    sharpness = layer.run(settings).sharpness
    reference = layer.fisher
    offsets = dict(zip(layer.names, itertools.accumulate([0] + [math.prod(s) for s in layer.shapes])))
    shapes = dict(zip(layer.names, layer.shapes))

    vectors = min(3, sharpness.subspace.k)
    assert len(sharpness.top_entries) == 5 * vectors
    for j in range(vectors):
        # v_j is determined up to sign only when lambda_j is well separated from its neighbours.
        lam = reference.eigenvalues
        gaps = [abs(float(lam[j] - lam[i])) for i in (j - 1, j + 1) if i >= 0]
        assert min(gaps) > 1e-3 * float(lam[j])

        column = reference.eigenvectors[:, j]
        expected_positions = torch.topk(column.abs(), 5).indices.tolist()
        entries = [entry for entry in sharpness.top_entries if entry.eigenvector == j + 1]
        positions = [
            offsets[entry.tensor] + _flat_position(entry.index, shapes[entry.tensor]) for entry in entries
        ]
        assert positions == expected_positions, f"v_{j + 1}: got {positions}, dense {expected_positions}"

        signs = {math.copysign(1.0, entry.value * float(column[p])) for entry, p in zip(entries, positions)}
        assert len(signs) == 1, f"v_{j + 1}: the reported entries disagree in sign with one another"
        for entry, p in zip(entries, positions):
            quantity = f"v_{j + 1}{entry.index} of {entry.tensor}"
            assert_close(quantity, abs(entry.value), abs(float(column[p])), RTOL)


def _flat_position(index: tuple[int, ...], shape: tuple[int, ...]) -> int:
    """Return the row-major offset of `index` in a tensor of `shape`."""
    return sum(i * math.prod(shape[axis + 1 :]) for axis, i in enumerate(index))


def test_set_usage_matches_dense(layer):
    result = layer.run(make_settings())

    for usage, sequences in ((result.safety, layer.safety), (result.finetune, layer.finetune)):
        assert usage.sequences == len(sequences)
        assert usage.tokens == sum(len(s.input_ids) for s in sequences)
        assert usage.loss_tokens == sum(sum(s.loss_mask) for s in sequences)
        assert_close("mean loss", usage.mean_loss, float(layer.losses(sequences).mean()), RTOL)
    assert result.complete
    assert result.incomplete_reason is None


# Check 2 and Check 3, for both optimizer forms.


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_overlap_matches_dense(layer, optimizer):
    settings = make_settings(optimizer)
    result = layer.run(settings)
    overlap = result.overlap
    reference = layer.fisher
    k = reference.rank(settings.rho, settings.k_max)
    direction = layer.update(optimizer).direction  # v = g or D g

    norm = float(direction.norm())
    epsilon = float(reference.project(direction, k).norm())
    assert result.optimizer_form == ("adam" if optimizer is Optimizer.ADAMW else "sgd")
    assert_close("gradient_norm", overlap.gradient_norm, norm, RTOL)
    assert_close("epsilon", overlap.epsilon, epsilon, RTOL)
    assert_close("overlap_ratio", overlap.overlap_ratio, epsilon / norm, RTOL)
    assert_close("epsilon_fisher", overlap.epsilon_fisher, float(reference.whiten(direction, k).norm()), RTOL)
    quadratic_form = float(direction @ reference.fisher @ direction)
    assert_close("quadratic_form", overlap.quadratic_form, quadratic_form, RTOL)
    assert overlap.orthogonality_level == settings.orthogonality_level
    assert overlap.second_order_trigger == (epsilon / norm < settings.orthogonality_level)

    assert len(overlap.coefficients) == k
    for j in range(k):
        expected = float(reference.eigenvectors[:, j] @ direction)
        assert_close(f"|c_{j + 1}|", abs(overlap.coefficients[j]), abs(expected), RTOL, scale=epsilon)


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_curvature_matches_dense(layer, optimizer):
    settings = make_settings(optimizer)
    result = layer.run(settings)
    curvature = result.curvature
    reference = layer.fisher
    k = reference.rank(settings.rho, settings.k_max)
    update = layer.update(optimizer)
    acceleration = update.acceleration  # h = H g or D H D g

    norm = float(acceleration.norm())
    projected = float(reference.project(acceleration, k).norm())
    assert curvature.hvp_method == "double_backward"
    assert_close("hvp_norm", curvature.hvp_norm, norm, RTOL)
    assert_close("gamma_euclidean", curvature.gamma_euclidean, projected, RTOL)
    assert_close("projected_fraction", curvature.projected_fraction, projected / norm, RTOL)
    assert_close("gamma_hat", curvature.gamma_hat, float(reference.whiten(acceleration, k).norm()), RTOL)

    # b_j is only defined up to the sign of v_j, but the product c_j b_j does not depend on it.
    assert len(curvature.coefficients) == k
    for j in range(k):
        column = reference.eigenvectors[:, j]
        b_j = float(column @ acceleration)
        c_j = float(column @ update.direction)
        assert_close(f"|b_{j + 1}|", abs(curvature.coefficients[j]), abs(b_j), RTOL, scale=projected)
        assert_close(
            f"c_{j + 1} b_{j + 1}", result.overlap.coefficients[j] * curvature.coefficients[j], c_j * b_j,
            RTOL, scale=projected * float(update.direction.norm()),
        )


def test_dense_hessian_is_symmetric(layer):
    """Guard on the reference: H from forward over reverse is symmetric."""
    hessian = layer.hessian
    assert float((hessian - hessian.T).abs().max()) < 1e-12 * float(hessian.abs().max())


def test_dense_hessian_matches_jvp(layer):
    """Guard on the reference: the dense H and the jvp route give the same H g."""
    gradient = layer.finetune_gradients.mean(dim=0)
    dense = layer.hessian @ gradient
    jvp = hessian_vector_product(layer.model, layer.names, layer.theta, layer.finetune, gradient)
    assert float((dense - jvp).norm()) < 1e-12 * float(dense.norm())


# Check 4: the forecast.

SEARCH_LIMIT = -1
FORECAST_CASES = {
    # name: (optimizer, learning rate, collapse step that tau is chosen for, or None for no collapse).
    # SEARCH_LIMIT stands for the last step the engine reports to have searched.
    "sgd-collapse": (Optimizer.SGD, 1e-2, 120),
    "sgd-extrapolated": (Optimizer.SGD, 1e-2, 400),
    "sgd-none": (Optimizer.SGD, 1e-2, None),
    "sgd-last-searched-step": (Optimizer.SGD, 1e-2, SEARCH_LIMIT),
    "adamw-collapse": (Optimizer.ADAMW, 1e-3, 120),
    "adamw-none": (Optimizer.ADAMW, 1e-3, None),
}


def _reference_forecast(layer: Scenario, settings: DiagnosticSettings, update: DenseUpdate | None = None):
    """Return the dense forecast at steps 1..REFERENCE_STEPS, along `update` or the optimizer's own."""
    k = layer.fisher.rank(settings.rho, settings.k_max)
    steps = torch.arange(1, REFERENCE_STEPS + 1)
    return dense_forecast(
        layer.fisher, k, update or layer.update(settings.optimizer), steps,
        learning_rate=settings.learning_rate, batch_size=settings.batch_size,
    )


def _pick_tau(reference: DenseForecast, target: int | None) -> float:
    """Return a tau first reached exactly at step `target`, or one never reached when target is None.

    tau sits below Delta_u_hat(target) by less than the noise term there, so a search that
    dropped the noise would miss `target`.
    """
    delta_u = reference.delta_u  # steps 1, 2, ...
    if target is None:
        return 2.0 * max(float(delta_u.max()), 1e-3)
    value = float(delta_u[target - 1])
    gap = value - float(delta_u[: target - 1].max())
    assert gap > 0, f"test setup: Delta_u_hat at step {target} does not exceed every earlier step"
    return value - 0.5 * min(float(reference.noise[target - 1]), gap)


@pytest.mark.parametrize("case", list(FORECAST_CASES))
def test_forecast_matches_dense(layer, case):
    optimizer, learning_rate, target = FORECAST_CASES[case]
    settings = make_settings(optimizer, learning_rate=learning_rate)
    reference = _reference_forecast(layer, settings)
    if target == SEARCH_LIMIT:
        target = layer.run(settings).forecast.search_limit_step
    settings = dataclasses.replace(settings, tau=_pick_tau(reference, target))
    forecast = layer.run(settings).forecast
    update = layer.update(optimizer)

    # Echoed settings and the searched range.
    assert forecast.tau == settings.tau
    assert forecast.learning_rate == settings.learning_rate
    assert forecast.batch_size == settings.batch_size
    assert forecast.planned_steps == settings.planned_steps
    assert forecast.optimizer_form == ("adam" if optimizer is Optimizer.ADAMW else "sgd")
    assert settings.planned_steps <= forecast.search_limit_step <= REFERENCE_STEPS

    # Collapse step: brute force over every integer step of the engine's search range.
    collapse = first_step_reaching(reference, settings.tau, forecast.search_limit_step)
    if target is None:
        assert collapse is None
    else:
        assert collapse == target
        # Guard: no step up to the collapse lies within rounding of tau.
        margin = float((reference.delta_u[:collapse] - settings.tau).abs().min())
        assert margin > 1e-7 * abs(settings.tau)
    assert forecast.collapse_step == collapse

    horizon = horizon_by_search(update, settings.learning_rate, forecast.search_limit_step)
    assert forecast.horizon_step == horizon
    extrapolated = collapse is not None and horizon is not None and collapse > horizon
    assert forecast.collapse_is_extrapolation == extrapolated
    if case == "sgd-collapse":
        assert not forecast.collapse_is_extrapolation
    if case == "sgd-extrapolated":
        assert forecast.collapse_is_extrapolation

    # Terms at the planned step and along the curve.
    planned = reference.at(settings.planned_steps)
    _assert_terms_close(f"step {settings.planned_steps}", forecast.at_planned_steps, planned)
    assert forecast.at_planned_steps.step == settings.planned_steps
    assert forecast.linear_dominates == (abs(planned["linear"]) > planned["drift"] + planned["noise"])

    curve_steps = [terms.step for terms in forecast.curve]
    assert curve_steps == sorted(set(curve_steps))
    assert curve_steps[0] >= 1
    assert curve_steps[-1] >= settings.planned_steps
    for terms in forecast.curve:
        _assert_terms_close(f"curve step {terms.step}", terms, reference.at(terms.step))


def _assert_terms_close(where: str, terms, expected: dict[str, float], rtol: float = RTOL) -> None:
    scale = abs(expected["linear"]) + expected["drift"] + expected["noise"]
    for field in ("delta_u", "linear", "drift", "noise", "onset_quartic"):
        assert_close(f"{where}: {field}", getattr(terms, field), expected[field], rtol, scale=scale)


@pytest.mark.parametrize("optimizer", [Optimizer.SGD, Optimizer.ADAMW])
def test_forecast_module_matches_dense(layer, optimizer):
    """evaluate_forecast and quartic_forecast, fed the dense c, b, a and noise, match the dense polynomial.

    Without a clipped Adam path the forecast module evaluates the plain second-order expansion,
    so the Adam direction is checked unclipped here.
    """
    settings = make_settings(optimizer, learning_rate=1e-2 if optimizer is Optimizer.SGD else 1e-3)
    reference = layer.fisher
    k = reference.rank(settings.rho, settings.k_max)
    update = dataclasses.replace(layer.update(optimizer), clipped=False)
    basis = reference.eigenvectors[:, :k]  # V_k, (d, k)
    inputs = ForecastInputs(
        eigenvalues=reference.eigenvalues[:k],
        c=basis.T @ update.direction,
        b=basis.T @ update.acceleration,
        mean_inner_v=float((layer.safety_gradients @ update.direction).mean()),
        mean_inner_h=float((layer.safety_gradients @ update.acceleration).mean()),
        noise_variance=noise_variance(reference, k, update),
        direction_norm=float(update.direction.norm()),
        hvp_norm=float(update.acceleration.norm()),
    )
    dense = _reference_forecast(layer, settings, update)

    steps = [1, 7, 40, 333, 4000]
    evaluated = evaluate_forecast(
        inputs, steps, learning_rate=settings.learning_rate, batch_size=settings.batch_size
    )
    for terms, step in zip(evaluated, steps):
        assert terms.step == step
        _assert_terms_close(f"step {step}", terms, dense.at(step), rtol=RTOL)

    tau = _pick_tau(dense, 150)
    result = quartic_forecast(
        inputs, tau=tau, learning_rate=settings.learning_rate, batch_size=settings.batch_size,
        planned_steps=settings.planned_steps, optimizer_form=optimizer.value,
    )
    assert result.collapse_step == first_step_reaching(dense, tau, result.search_limit_step) == 150
    assert result.horizon_step == horizon_by_search(update, settings.learning_rate, result.search_limit_step)


# Independence of micro-batch size and padding.


def _reported_numbers(result: DiagnosticsResult) -> dict[str, object]:
    """Flatten every field of a result into {path: value}, tensors entry by entry."""
    numbers: dict[str, object] = {}

    def walk(path: str, value) -> None:
        if dataclasses.is_dataclass(value):
            for field in dataclasses.fields(value):
                walk(f"{path}.{field.name}", getattr(value, field.name))
        elif isinstance(value, torch.Tensor):
            for i, entry in enumerate(value.flatten().tolist()):
                numbers[f"{path}[{i}]"] = entry
        elif isinstance(value, (tuple, list)):
            for i, entry in enumerate(value):
                walk(f"{path}[{i}]", entry)
        else:
            numbers[path] = value

    walk("result", result)
    del numbers["result.elapsed_s"]
    return numbers


@pytest.mark.parametrize("micro_batch_size", [1, 3, 4, FINETUNE_COUNT])
def test_curvature_pass_batch_independent(layer, micro_batch_size):
    baseline = layer.run(make_settings(micro_batch_size=1))
    result = layer.run(make_settings(micro_batch_size=micro_batch_size))
    acceleration = layer.update(Optimizer.SGD).acceleration
    assert_close("hvp_norm", result.curvature.hvp_norm, float(acceleration.norm()), RTOL)

    # Every reported value against micro-batches of 1 (no padding at all).
    expected = _reported_numbers(baseline)
    actual = _reported_numbers(result)
    assert actual.keys() == expected.keys()
    for path, value in expected.items():
        if isinstance(value, float):
            assert_close(path, actual[path], value, INDEPENDENCE_RTOL, scale=1e-300)
        else:
            assert actual[path] == value, f"{path}: got {actual[path]!r}, expected {value!r}"


@pytest.mark.parametrize("scenario", ["layer", "tied"])
def test_sequence_losses_padded_batch(request, scenario):
    """Per-sequence losses of one right-padded batch equal those of each sequence alone, unpadded."""
    case: Scenario = request.getfixturevalue(scenario)
    expected = case.losses(case.finetune)
    with torch.no_grad():
        padded = sequence_losses(case.model, make_batch(case.finetune, PAD_TOKEN_ID))
        alone = torch.cat([sequence_losses(case.model, make_batch([s], PAD_TOKEN_ID)) for s in case.finetune])

    for i in range(FINETUNE_COUNT):
        assert_close(f"sequence {i} alone", alone[i], expected[i], INDEPENDENCE_RTOL)
        assert_close(f"sequence {i} in the padded batch", padded[i], expected[i], INDEPENDENCE_RTOL)


@pytest.mark.parametrize("micro_batch_size", [1, 3, FINETUNE_COUNT])
def test_stock_model_micro_batches(tied, micro_batch_size):
    """The curvature pass on the stock model matches the dense h for every micro-batch size."""
    settings = make_settings(micro_batch_size=micro_batch_size)
    curvature = tied.run(settings).curvature
    acceleration = tied.update(Optimizer.SGD).acceleration
    k = tied.fisher.rank(settings.rho, settings.k_max)

    gamma_hat = float(tied.fisher.whiten(acceleration, k).norm())
    assert_close("hvp_norm", curvature.hvp_norm, float(acceleration.norm()), STOCK_CURVATURE_RTOL)
    assert_close("gamma_hat", curvature.gamma_hat, gamma_hat, STOCK_CURVATURE_RTOL)


# The tied embedding matrix in scope.


def test_tied_reference_sees_lm_head(tied):
    """Guard: ids 0..2 never occur as inputs, so their embedding rows get gradient only via the LM head."""
    hidden = tied.model.config.hidden_size
    rows_of_unused_tokens = tied.safety_gradients[:, : 3 * hidden]
    assert float(rows_of_unused_tokens.abs().min(dim=1).values.min()) > 0.0


def test_tied_embedding_scope_matches_dense(tied):
    settings = make_settings(Optimizer.SGD)
    result = tied.run(settings)
    reference = tied.fisher
    k = reference.rank(settings.rho, settings.k_max)
    update = tied.update(Optimizer.SGD)
    subspace = result.sharpness.subspace

    assert subspace.k == k
    for j in range(SAFETY_COUNT):
        assert_close(f"lambda_{j + 1}", subspace.spectrum[j], reference.eigenvalues[j], RTOL)
    assert_close("trace", subspace.trace, reference.trace, RTOL)

    weights = reference.eigenvalues[:k] / reference.eigenvalues[:k].sum()
    rows = {row.tensor: row.share for row in result.sharpness.sensitivity}
    embedding_rows = math.prod(tied.shapes[0])
    embedding_share = float((reference.eigenvectors[:embedding_rows, :k].square().sum(dim=0) * weights).sum())
    assert_close("share of the embedding", rows[TIED_SCOPE[0]], embedding_share, RTOL)
    assert_close("share of down_proj", rows[TIED_SCOPE[1]], 1.0 - embedding_share, RTOL)

    v, h = update.direction, update.acceleration
    overlap, curvature = result.overlap, result.curvature
    assert_close("epsilon", overlap.epsilon, float(reference.project(v, k).norm()), RTOL)
    assert_close("epsilon_fisher", overlap.epsilon_fisher, float(reference.whiten(v, k).norm()), RTOL)
    assert_close("quadratic_form", overlap.quadratic_form, float(v @ reference.fisher @ v), RTOL)
    assert_close("hvp_norm", curvature.hvp_norm, float(h.norm()), STOCK_CURVATURE_RTOL)
    assert_close("gamma_hat", curvature.gamma_hat, float(reference.whiten(h, k).norm()), STOCK_CURVATURE_RTOL)
    gamma_euclidean = float(reference.project(h, k).norm())
    assert_close("gamma_euclidean", curvature.gamma_euclidean, gamma_euclidean, STOCK_CURVATURE_RTOL)

    dense = dense_forecast(
        reference, k, update, torch.tensor([settings.planned_steps]),
        learning_rate=settings.learning_rate, batch_size=settings.batch_size,
    )
    planned = dense.at(settings.planned_steps)
    _assert_terms_close("planned step", result.forecast.at_planned_steps, planned, rtol=STOCK_CURVATURE_RTOL)


# Rank rule, zero gradients and the time budget.


@pytest.fixture(scope="module")
def duplicated(layer) -> Scenario:
    """Layer-1 scope with a safety set whose last sequence repeats the first: rank(G) = n - 1."""
    safety = random_sequences(SAFETY_COUNT - 1, seed=1)
    safety.append(dataclasses.replace(safety[0], index=SAFETY_COUNT - 1))
    return Scenario(layer.model, LAYER_SCOPE, safety, layer.finetune, dense_hessian=False)


def test_rank_rule_full_trace(duplicated):
    subspace = duplicated.run(make_settings(rho=1.0, k_max=50)).sharpness.subspace

    assert duplicated.fisher.numerical_rank == SAFETY_COUNT - 1
    assert subspace.numerical_rank == SAFETY_COUNT - 1
    assert subspace.k == SAFETY_COUNT - 1
    assert abs(float(subspace.spectrum[-1])) < 1e-12 * float(subspace.spectrum[0])


def test_rank_rule_k_max_cap(duplicated):
    subspace = duplicated.run(make_settings(rho=1.0, k_max=1)).sharpness.subspace

    assert subspace.k == 1
    assert_close("lambda_1", subspace.eigenvalues[0], duplicated.fisher.eigenvalues[0], RTOL)
    tail_mass = duplicated.fisher.trace - float(duplicated.fisher.eigenvalues[0])
    assert_close("tail_mass", subspace.tail_mass, tail_mass, RTOL)


def test_zero_gradient_scope_raises():
    """With o_proj of layer 1 at zero, q, k and v of layer 1 cannot change the output."""
    model = build_model()
    with torch.no_grad():
        model.model.layers[1].self_attn.o_proj.weight.zero_()
    names = [f"model.layers.1.self_attn.{p}_proj.weight" for p in "qkv"]
    safety = random_sequences(4, seed=1)
    finetune = random_sequences(3, seed=2, first_index=100)
    gradients = gradient_matrix(model, names, flat_parameters(model, names), safety)
    assert float(gradients.abs().max()) == 0.0

    table = dict(model.named_parameters())
    with pytest.raises(AnalysisError, match="safety gradients are zero"):
        run_diagnostics(
            model, [table[n] for n in names], names, safety, finetune, make_settings(),
            pad_token_id=PAD_TOKEN_ID, deadline=Deadline(None),
        )


def _stepping_clock(calls_before_expiry: int):
    """Return a clock that reads 0 s for the first `calls_before_expiry` reads, then 100 s."""
    readings = itertools.chain(itertools.repeat(0.0, calls_before_expiry), itertools.repeat(100.0))
    return lambda: next(readings)


def test_spent_deadline_stops_at_safety_gradients(layer):
    deadline = Deadline(1.0, clock=_stepping_clock(1))
    result = run_diagnostics(
        layer.model, layer.params, layer.names, layer.safety, layer.finetune, make_settings(),
        pad_token_id=PAD_TOKEN_ID, deadline=deadline,
    )

    assert not result.complete
    assert "safety gradients" in result.incomplete_reason
    assert result.sharpness is None
    assert result.overlap is None
    assert result.curvature is None
    assert result.forecast is None
    assert result.safety.mean_loss is None


def test_deadline_in_curvature_keeps_earlier_checks(layer):
    # One read at construction, then one per safety and one per fine-tune micro-batch.
    settings = make_settings()
    batches = -(-SAFETY_COUNT // settings.micro_batch_size) - (-FINETUNE_COUNT // settings.micro_batch_size)
    deadline = Deadline(1.0, clock=_stepping_clock(1 + batches))
    result = run_diagnostics(
        layer.model, layer.params, layer.names, layer.safety, layer.finetune, settings,
        pad_token_id=PAD_TOKEN_ID, deadline=deadline,
    )

    assert not result.complete
    assert "curvature" in result.incomplete_reason
    assert result.sharpness is not None
    assert result.overlap is not None
    assert result.curvature is None
    assert result.forecast is None
    assert_close("epsilon", result.overlap.epsilon, layer.run(settings).overlap.epsilon, 0.0, scale=1e-300)
