"""Run the four checks on a model and two tokenised sets.

Passes, in order (n safety sequences, M fine-tune sequences, d scoped parameters):
1. safety: per-sequence gradients G (n, d) -> Gram matrix -> Fisher subspace (Check 1);
2. fine-tune: per-example gradients (M, d) -> update direction v and per-example directions
   u_m -> inner products G v and G u_m (Check 2 and the noise term);
3. curvature: h = H v (or D H D g for Adam) by double backward, one sequence at a time so that
   G h_m is known per record -> G h (Checks 3 and 4, record attribution).

The safety side (pass 1) does not depend on the fine-tune data, so `rerun_without` repeats only
passes 2-3 on a subset of the fine-tune records (the what-if of dropping the riskiest ones).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..budget import BudgetExhausted, Deadline
from ..errors import AnalysisError
from ..loading.records import EncodedSequence
from .adam_path import ClippedAdamPath
from .curvature import CurvatureResult, curvature_coupling
from .fisher import EigenvectorEntry, FisherSubspace, TensorSensitivity, fisher_subspace, gram_matrix, sensitivity_map
from .forecast import ForecastResult, forecast_inputs, quartic_forecast
from .gradients import hessian_vector_product, per_sequence_gradients, storage_dtype, stream_gradients
from .attribution import RecordScore, record_scores
from .baselines import BaselineResult, baseline_signals
from .overlap import OverlapResult, initial_overlap
from .settings import DiagnosticSettings, Optimizer, Stage
from .sketch import CountSketch
from .distributed import current_shard, reduce_sum
from .prefix import PrefixCache
from .uncertainty import BootstrapInputs, UncertaintyResult, bootstrap

COLUMN_CHUNK = 1 << 20


@dataclass(frozen=True)
class SetUsage:
    """Sequence and token counts of one set, and its mean loss at theta*."""

    sequences: int
    tokens: int
    loss_tokens: int
    mean_loss: float | None
    """Mean per-sequence loss at theta*, nats per response token; None if not computed."""


@dataclass(frozen=True)
class SharpnessResult:
    """Check 1: the Fisher subspace plus its sensitivity map."""

    subspace: FisherSubspace
    sensitivity: tuple[TensorSensitivity, ...]
    top_entries: tuple[EigenvectorEntry, ...]


@dataclass(frozen=True)
class EngineInfo:
    """Record of the gradient path and the Hessian-vector method a run used."""

    path: str
    """`exact` (gradients held in memory) or `sketched` (CountSketch, sketch.py)."""
    sketch_width: int | None
    """r, the number of sketched coordinates; None on the exact path."""
    error_scale: float
    """sqrt(2 / min r_t): one standard deviation of a sketched inner product over ||a|| ||b||; 0 when exact."""
    hvp_method: str | None
    """Method of the Hessian-vector products; None when the curvature pass did not run."""


@dataclass(frozen=True)
class DiagnosticsResult:
    """Everything the diagnostics produced; a check is None when the run stopped before it."""

    sharpness: SharpnessResult | None
    overlap: OverlapResult | None
    curvature: CurvatureResult | None
    forecast: ForecastResult | None
    uncertainty: UncertaintyResult | None
    baselines: BaselineResult | None
    records: tuple[RecordScore, ...]
    """Per fine-tune record attribution, in the order of the analysed sequences."""
    safety: SetUsage
    finetune: SetUsage
    optimizer_form: str
    complete: bool
    incomplete_reason: str | None
    elapsed_s: float
    engine: EngineInfo | None = None


ProgressCallback = Callable[[Stage, int, int], None]


def _usage(sequences: Sequence[EncodedSequence], losses: torch.Tensor | None) -> SetUsage:
    return SetUsage(
        sequences=len(sequences),
        tokens=sum(s.num_tokens for s in sequences),
        loss_tokens=sum(s.num_loss_tokens for s in sequences),
        mean_loss=float(losses.mean()) if losses is not None and len(losses) else None,
    )


def _inner_products(
    left: torch.Tensor,
    right: torch.Tensor,
    scale: torch.Tensor | None = None,
    left_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return (left * left_scale) @ (right * scale).T in float64, (n, d) x (M, d) -> (n, M).

    Columns are converted to float64 one chunk at a time, so no float64 copy of a whole
    gradient matrix is made.
    """
    result = torch.zeros((left.shape[0], right.shape[0]), dtype=torch.float64)
    for start in range(0, left.shape[1], COLUMN_CHUNK):
        columns = slice(start, start + COLUMN_CHUNK)
        left_block = left[:, columns].to(torch.float64)
        if left_scale is not None:
            left_block = left_block * left_scale[columns]
        block = right[:, columns].to(torch.float64)
        if scale is not None:
            block = block * scale[columns]
        result += left_block @ block.T
    return result


def adam_second_moment(mean: torch.Tensor, second_moment: torch.Tensor, count: int, batch_size: int) -> torch.Tensor:
    """Return v_hat = g^2 + Var_m(g'_m) / B, the expected square of a minibatch gradient, shape (d,).

    Adam's v averages squared minibatch gradients, not squared per-example ones, so the noise
    part of the per-example second moment shrinks by the batch size B. Var_m is the unbiased
    variance over the M = `count` sequences; with one sequence it is taken as 0.
    """
    square = mean.square()
    if count < 2:
        return square
    variance = (second_moment - square).clamp_(min=0.0) * (count / (count - 1))
    return square + variance / batch_size


def _column_moments(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the column mean and mean square of (M, d) rows in float64, one column chunk at a time."""
    mean = torch.zeros(matrix.shape[1], dtype=torch.float64)
    square = torch.zeros(matrix.shape[1], dtype=torch.float64)
    for start in range(0, matrix.shape[1], COLUMN_CHUNK):
        block = matrix[:, start : start + COLUMN_CHUNK].to(torch.float64)
        mean[start : start + COLUMN_CHUNK] = block.mean(dim=0)
        square[start : start + COLUMN_CHUNK] = block.square().mean(dim=0)
    return mean, square


@dataclass
class _SafetySide:
    """Pass 1, kept so that the fine-tune side can be recomputed on a subset of records."""

    gradients: torch.Tensor  # G, (n, d)
    gram: torch.Tensor  # K, (n, n)
    subspace: FisherSubspace
    sharpness: SharpnessResult
    losses: torch.Tensor
    sequences: Sequence[EncodedSequence]


@dataclass
class _FinetuneState:
    """The fine-tune gradients and their losses, for the checks and for reruns on subsets.

    Exact path: `gradients` contains g'_m as rows (M, d), and the moments come from it.
    Sketched path: `gradients` contains S u_m (M, r) with u_m = D g'_m (g'_m for SGD), and the
    mean gradient and second moment are exact (d,) sums kept beside it.
    """

    gradients: torch.Tensor
    losses: torch.Tensor
    sequences: Sequence[EncodedSequence]
    mean: torch.Tensor | None = None
    second_moment: torch.Tensor | None = None


class DiagnosticsRun:
    """The passes of one analysis: `run` computes the checks, `rerun_without` the what-if."""

    def __init__(self, model, params, names, settings: DiagnosticSettings, *, pad_token_id: int,
                 deadline: Deadline, progress: ProgressCallback | None = None) -> None:
        self.model = model
        self.params = list(params)
        self.names = list(names)
        self.settings = settings
        self.pad_token_id = pad_token_id
        self.deadline = deadline
        self.progress = progress
        self.safety_side: _SafetySide | None = None
        self.finetune_state: _FinetuneState | None = None
        self.sizes = [p.numel() for p in self.params]
        self.sketch = None
        if settings.sketch_width is not None:
            self.sketch = CountSketch(self.sizes, settings.sketch_width, seed=settings.seed, device=self.params[0].device)
        self.hvp_method: str | None = None
        self.shard = current_shard()
        self.prefix = PrefixCache(model, self.names)

    def engine_info(self) -> EngineInfo:
        if self.sketch is None:
            path = "exact" if self.settings.spill_dir is None else "streamed"
            return EngineInfo(path, None, 0.0, self.hvp_method)
        return EngineInfo("sketched", self.sketch.width, self.sketch.layout.error_scale, self.hvp_method)

    def _allocate(self, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """Return a zero matrix for exact gradient rows: in memory, or on the streamed path in a
        memory-mapped file under `spill_dir` that is unlinked at once, so it disappears with the tensor."""
        if self.settings.spill_dir is None:
            return torch.zeros(shape, dtype=dtype)
        with tempfile.NamedTemporaryFile(dir=self.settings.spill_dir, prefix="riskgate-rows-", suffix=".bin",
                                         delete=False) as handle:
            name = handle.name
        try:
            rows = torch.from_file(name, shared=True, size=shape[0] * shape[1], dtype=dtype)
        finally:
            os.unlink(name)
        return rows.view(shape)

    def _project(self, vector: torch.Tensor) -> torch.Tensor:
        """x -> S x on the sketched path, in the gradients' dtype; x itself on the exact path."""
        if self.sketch is None:
            return vector
        device = self.sketch.index.device
        return self.sketch.apply_vector(vector.to(dtype=storage_dtype(self.params), device=device)).cpu()

    def _gradients(self, sequences, stage: Stage, scale: torch.Tensor | None = None, moments: bool = False):
        """One gradient pass: rows (len, d) exact or (len, r) sketched, losses, and exact moments.

        On the sketched path each row is S (scale * g_m). With `moments`, the exact sum and
        sum of squares of the g_m, (d,) each, are accumulated as well.
        """
        if self.sketch is None:
            grads, losses = per_sequence_gradients(
                self.model, self.params, sequences, pad_token_id=self.pad_token_id, deadline=self.deadline,
                stage=stage.value, micro_batch_size=self.settings.micro_batch_size, progress=self._report(stage),
                shard=self.shard, prefix=self.prefix, allocate=self._allocate,
            )
            return grads, losses, None, None
        sketch = self.sketch
        dtype = storage_dtype(self.params)
        rows = torch.zeros((len(sequences), sketch.width), dtype=dtype)
        offsets = [0]
        for size in self.sizes:
            offsets.append(offsets[-1] + size)
        # Exact (d,) sums in the gradients' dtype: float32 for float32 models, which halves
        # the memory of the whole-model vectors against float64.
        total = torch.zeros(offsets[-1], dtype=dtype) if moments else None
        squares = torch.zeros(offsets[-1], dtype=dtype) if moments else None

        def add(indices: torch.Tensor, index: int, grads: torch.Tensor) -> None:
            span = slice(offsets[index], offsets[index + 1])
            grads = grads.to(dtype)
            if moments:
                total[span] += grads.sum(dim=0).cpu()
                squares[span] += torch.linalg.vector_norm(grads, dim=0).square_().cpu()
            if scale is not None:
                grads = grads * scale[span].to(dtype=dtype, device=grads.device)
            rows[indices, sketch.columns(index)] += sketch.apply(index, grads).cpu()

        losses = stream_gradients(
            self.model, self.params, sequences, add, pad_token_id=self.pad_token_id, deadline=self.deadline,
            stage=stage.value, micro_batch_size=self.settings.micro_batch_size, progress=self._report(stage),
            shard=self.shard, prefix=self.prefix,
        )
        for tensor in (rows, losses, total, squares):
            reduce_sum(tensor, self.shard)
        return rows, losses, total, squares

    def _exact_products(self, sequences, vectors: list[torch.Tensor]) -> torch.Tensor:
        """Return G X for the (d,) vectors X, exactly, from one more pass: (n, len(vectors)) float64."""
        offsets = [0]
        for size in self.sizes:
            offsets.append(offsets[-1] + size)
        products = torch.zeros((len(sequences), len(vectors)), dtype=torch.float64)

        def add(rows: torch.Tensor, index: int, grads: torch.Tensor) -> None:
            span = slice(offsets[index], offsets[index + 1])
            block = torch.stack([v[span] for v in vectors], dim=1).to(dtype=grads.dtype, device=grads.device)
            products[rows] += (grads @ block).to(dtype=torch.float64, device="cpu")  # block: (numel, len)

        stream_gradients(
            self.model, self.params, sequences, add, pad_token_id=self.pad_token_id, deadline=self.deadline,
            stage=Stage.SAFETY_PRODUCTS.value, micro_batch_size=self.settings.micro_batch_size,
            progress=self._report(Stage.SAFETY_PRODUCTS), shard=self.shard, prefix=self.prefix,
        )
        return reduce_sum(products, self.shard)

    def _finetune_pass(self, finetune: Sequence[EncodedSequence]) -> _FinetuneState:
        """Fine-tune gradients; on the sketched Adam path, a second pass sketches D g'_m."""
        grads, losses, total, squares = self._gradients(finetune, Stage.FINETUNE_GRADIENTS, moments=True)
        if self.sketch is None:
            return _FinetuneState(grads, losses, finetune)
        count = len(finetune)
        mean, second_moment = total.div_(count), squares.div_(count)
        if self.settings.optimizer is Optimizer.ADAMW:
            v_hat = adam_second_moment(mean, second_moment, count, self.settings.batch_size)
            preconditioner = 1.0 / (v_hat.sqrt() + self.settings.adam_epsilon)
            grads, _, _, _ = self._gradients(finetune, Stage.FINETUNE_GRADIENTS, scale=preconditioner)
        return _FinetuneState(grads, losses, finetune, mean, second_moment)

    def _report(self, stage: Stage):
        progress = self.progress
        return None if progress is None else (lambda done, total: progress(stage, done, total))

    def run(self, safety: Sequence[EncodedSequence], finetune: Sequence[EncodedSequence],
            cached: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> "DiagnosticsResult":
        """Run Checks 1-4. A spent time budget gives complete=False, never a pass.

        `cached` = (gradients, gram, losses) of a saved safety side for these `safety`
        sequences (riskgate/subspace.py) skips the safety pass.
        """
        optimizer_form = "adam" if self.settings.optimizer is Optimizer.ADAMW else "sgd"
        partial: dict = {}
        try:
            # The sketched path's exact-products pass needs the safety sequences' states too.
            needed = list(finetune) + (list(safety) if cached is None or self.sketch is not None else [])
            self.prefix.prepare(needed, self.pad_token_id)
            with self.prefix.tail():
                if cached is None:
                    self.safety_side = self._safety_pass(safety)
                else:
                    self.safety_side = self._safety_side(*cached, safety)
                partial["sharpness"] = self.safety_side.sharpness
                self.finetune_state = self._finetune_pass(finetune)
                return self._finetune_side(self.finetune_state, partial)
        except BudgetExhausted as exc:
            safety_losses = self.safety_side.losses if self.safety_side else None
            finetune_losses = self.finetune_state.losses if self.finetune_state else None
            return DiagnosticsResult(
                sharpness=partial.get("sharpness"),
                overlap=partial.get("overlap"),
                curvature=partial.get("curvature"),
                forecast=partial.get("forecast"),
                uncertainty=None,
                baselines=None,
                records=(),
                safety=_usage(safety, safety_losses),
                finetune=_usage(finetune, finetune_losses),
                optimizer_form=optimizer_form,
                complete=False,
                incomplete_reason=str(exc),
                elapsed_s=self.deadline.elapsed_s,
                engine=self.engine_info(),
            )

    def rerun_without(self, dropped_indices: set[int]) -> "DiagnosticsResult":
        """Repeat Checks 2-4 without the fine-tune records whose `index` is in the set."""
        if self.safety_side is None or self.finetune_state is None:
            raise AnalysisError("what-if: the full analysis has not run")
        state = self.finetune_state
        rows = [row for row, seq in enumerate(state.sequences) if seq.index not in dropped_indices]
        if not rows:
            raise AnalysisError("what-if: dropping these records leaves no fine-tune sequence")
        kept = [state.sequences[row] for row in rows]
        partial = {"sharpness": self.safety_side.sharpness}
        with self.prefix.tail():
            if self.sketch is not None:
                # Sketched rows cannot give the subset's exact moments: rerun the passes on it.
                try:
                    return self._finetune_side(self._finetune_pass(kept), partial)
                except BudgetExhausted as exc:
                    raise AnalysisError(f"what-if: {exc}") from exc
            selector = torch.tensor(rows, dtype=torch.long)
            gradients = self._allocate((len(rows), state.gradients.shape[1]), state.gradients.dtype)
            for target, row in enumerate(rows):
                gradients[target] = state.gradients[row]
            subset = _FinetuneState(gradients, state.losses[selector], kept)
            return self._finetune_side(subset, partial)

    def _safety_pass(self, safety: Sequence[EncodedSequence]) -> _SafetySide:
        gradients, losses, _, _ = self._gradients(safety, Stage.SAFETY_GRADIENTS)  # G (n, d) or S G (n, r)
        return self._safety_side(gradients, gram_matrix(gradients), losses, safety)

    def _safety_side(self, gradients: torch.Tensor, gram: torch.Tensor, losses: torch.Tensor,
                     safety: Sequence[EncodedSequence]) -> _SafetySide:
        """Check 1 from the safety gradients G (or their sketches) and K = G G^T / n."""
        subspace = fisher_subspace(
            gram, rho=self.settings.rho, k_max=self.settings.k_max, gradient_dtype=gradients.dtype
        )
        shapes = [tuple(p.shape) for p in self.params]
        # A sketch that copied every tensor exactly has the exact layout, entries included.
        copied = self.sketch is None or all(self.sketch.layout.exact)
        columns = None if copied else [self.sketch.columns(t) for t in range(len(self.params))]
        rows, entries = sensitivity_map(gradients, subspace, self.names, shapes, columns=columns)
        sharpness = SharpnessResult(subspace, tuple(rows), tuple(entries))
        return _SafetySide(gradients, gram, subspace, sharpness, losses, safety)

    def _finetune_side(self, state: _FinetuneState, partial: dict) -> "DiagnosticsResult":
        settings = self.settings
        side = self.safety_side
        finetune, finetune_grads, finetune_losses = state.sequences, state.gradients, state.losses
        safety_grads, subspace = side.gradients, side.subspace
        optimizer_form = "adam" if settings.optimizer is Optimizer.ADAMW else "sgd"
        project = self._project

        # Check 2: the update direction v and its overlap with the subspace.
        exact = self.sketch is None
        if exact:
            mean_grad, second_moment = _column_moments(finetune_grads)  # (d,) each
        else:
            mean_grad, second_moment = state.mean, state.second_moment
        if settings.optimizer is Optimizer.ADAMW:
            v_hat = adam_second_moment(mean_grad, second_moment, len(finetune), settings.batch_size)
            preconditioner = 1.0 / (v_hat.sqrt() + settings.adam_epsilon)  # D, (d,)
        else:
            preconditioner = None
        direction = mean_grad if preconditioner is None else preconditioner * mean_grad  # v, (d,)
        inner_v = _inner_products(safety_grads, project(direction)[None, :])[:, 0]  # G v, (n,)
        overlap = initial_overlap(
            subspace, inner_v, float(direction.norm()), orthogonality_level=settings.orthogonality_level
        )
        partial["overlap"] = overlap
        inner_g = inner_v if preconditioner is None else _inner_products(safety_grads, project(mean_grad)[None, :])[:, 0]
        baselines = baseline_signals(
            side.gram, inner_g, inner_v, gradient_norm=float(mean_grad.norm()),
            direction_norm=float(direction.norm()), rank=subspace.k, seed=settings.seed,
        )

        # Per-example directions u_m = D g'_m (g'_m for SGD), for the noise term, the
        # attribution and the bootstrap. Sketched rows already hold S u_m.
        row_scale = preconditioner if exact else None
        per_example = _inner_products(safety_grads, finetune_grads, row_scale)  # G u_m, (n, M)
        direction_gram = _inner_products(
            finetune_grads, finetune_grads, row_scale, left_scale=row_scale
        )  # <u_m, u_m'>, (M, M)

        # Check 3: h = H v for SGD, h = D H v = D H D g for Adam, with G h_m per record.
        per_record_h = torch.zeros((safety_grads.shape[0], len(finetune)), dtype=torch.float64)  # (n, M)

        # Each rank takes its share of the records; their H_m v and G h_m are summed over ranks.
        mine = [m for m in range(len(finetune)) if self.shard is None or self.shard.owns(m)]

        def record_hvp(position: int, hvp_m: torch.Tensor) -> None:
            scaled = hvp_m.to(mean_grad.dtype) if preconditioner is None else preconditioner * hvp_m.to(mean_grad.dtype)
            per_record_h[:, mine[position]] = _inner_products(safety_grads, project(scaled)[None, :])[:, 0]

        if mine:
            hvp, hvp_method = hessian_vector_product(
                self.model, self.params, [finetune[m] for m in mine], direction, pad_token_id=self.pad_token_id,
                deadline=self.deadline, micro_batch_size=settings.micro_batch_size, method=settings.hvp_method,
                progress=self._report(Stage.CURVATURE), on_sequence=record_hvp, prefix=self.prefix,
            )
            hvp = hvp * len(mine)  # the sum of this rank's H_m v
        else:
            hvp, hvp_method = torch.zeros(sum(self.sizes), dtype=storage_dtype(self.params)), settings.hvp_method
        hvp = reduce_sum(hvp, self.shard) / len(finetune)
        reduce_sum(per_record_h, self.shard)
        self.hvp_method = hvp_method.value
        hvp = hvp.to(mean_grad.dtype)
        if preconditioner is not None:
            hvp = preconditioner * hvp
        inner_h = _inner_products(safety_grads, project(hvp)[None, :])[:, 0]  # G h, (n,)
        if not exact:
            # Sketched G v and G h carry an error relative to ||g_i|| ||v||, large against the
            # small projections these checks measure, so one more safety pass computes them exactly.
            inner_v, inner_g, inner_h = self._exact_products(side.sequences, [direction, mean_grad, hvp]).unbind(1)
            overlap = initial_overlap(
                subspace, inner_v, float(direction.norm()), orthogonality_level=settings.orthogonality_level
            )
            partial["overlap"] = overlap
            baselines = baseline_signals(
                side.gram, inner_g, inner_v, gradient_norm=float(mean_grad.norm()),
                direction_norm=float(direction.norm()), rank=subspace.k, seed=settings.seed,
            )
        curvature = curvature_coupling(subspace, inner_h, float(hvp.norm()), hvp_method=hvp_method.value)
        partial["curvature"] = curvature

        # Check 4: the forecast.
        inputs = forecast_inputs(subspace, overlap, curvature, inner_v, inner_h, per_example)
        path = None
        if preconditioner is not None:
            path = ClippedAdamPath(gradients=safety_grads, direction=direction, acceleration=hvp, subspace=subspace,
                                   sketch=self.sketch)
        self.deadline.check("forecast")
        forecast = quartic_forecast(
            inputs, tau=settings.tau, learning_rate=settings.learning_rate,
            batch_size=settings.batch_size, planned_steps=settings.planned_steps,
            optimizer_form=optimizer_form, path=path,
        )
        partial["forecast"] = forecast

        # Record attribution: exact shares of the sums over records (attribution.py).
        records = record_scores(
            subspace, [seq.index for seq in finetune], per_example, per_record_h, direction_gram,
            side.gram, learning_rate=settings.learning_rate, planned_steps=settings.planned_steps,
        )

        # Sampling uncertainty, from the quantities above without new passes.
        uncertainty = None
        if settings.bootstrap_resamples > 0:
            self.deadline.check("bootstrap")
            uncertainty = bootstrap(
                BootstrapInputs(side.gram, per_example, direction_gram, inner_h, curvature.hvp_norm, safety_grads.dtype),
                rho=settings.rho, k_max=settings.k_max, orthogonality_level=settings.orthogonality_level,
                tau=settings.tau, learning_rate=settings.learning_rate, batch_size=settings.batch_size,
                search_limit=forecast.search_limit_step, with_collapse=path is None,
                resamples=settings.bootstrap_resamples, seed=settings.seed,
            )

        return DiagnosticsResult(
            sharpness=partial["sharpness"],
            overlap=overlap,
            curvature=curvature,
            forecast=forecast,
            uncertainty=uncertainty,
            baselines=baselines,
            records=tuple(records),
            safety=_usage(side.sequences, side.losses),
            finetune=_usage(finetune, finetune_losses),
            optimizer_form=optimizer_form,
            complete=True,
            incomplete_reason=None,
            elapsed_s=self.deadline.elapsed_s,
            engine=self.engine_info(),
        )


def run_diagnostics(
    model: torch.nn.Module,
    params: Sequence[torch.Tensor],
    names: Sequence[str],
    safety: Sequence[EncodedSequence],
    finetune: Sequence[EncodedSequence],
    settings: DiagnosticSettings,
    *,
    pad_token_id: int,
    deadline: Deadline,
    progress: ProgressCallback | None = None,
) -> DiagnosticsResult:
    """Run Checks 1-4. A spent time budget gives a result with complete=False, never a pass."""
    runner = DiagnosticsRun(model, params, names, settings, pad_token_id=pad_token_id,
                            deadline=deadline, progress=progress)
    return runner.run(safety, finetune)
