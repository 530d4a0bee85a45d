"""Check 1, alignment sharpness: the top eigenpairs of the empirical safety Fisher.

Notation: G is the (n, d) matrix of per-sequence safety gradients g_i = grad l_i(theta*).
The empirical Fisher F = (1/n) G^T G (uncentred, d x d) is never formed. Its nonzero
eigenvalues are those of the Gram matrix K = (1/n) G G^T (n x n): with K = U diag(lambda) U^T,
the eigenvectors of F are v_j = G^T u_j / sqrt(n lambda_j), and tr(F) = tr(K).
Eigenvalues are in nats^2 per token^2 per squared parameter unit (the Fisher of a per-token
mean loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..errors import AnalysisError


@dataclass(frozen=True)
class FisherSubspace:
    """The rank-k sensitive subspace P = V_k V_k^T, held through the Gram eigenvectors."""

    spectrum: torch.Tensor
    """All n eigenvalues of K in descending order, float64, shape (n,)."""
    gram_eigenvectors: torch.Tensor
    """u_1..u_k as columns, float64, shape (n, k)."""
    k: int
    rho: float
    k_max: int
    numerical_rank: int
    """Eigenvalues above lambda_1 * max(n, 16) * eps(gradient dtype); k never exceeds it."""
    n: int

    @property
    def eigenvalues(self) -> torch.Tensor:
        """lambda_1..lambda_k, shape (k,)."""
        return self.spectrum[: self.k]

    @property
    def trace(self) -> float:
        return float(self.spectrum.clamp(min=0).sum())

    @property
    def tail_mass(self) -> float:
        """sum_{j>k} lambda_j: Fisher mass outside the subspace."""
        return float(self.spectrum[self.k :].clamp(min=0).sum())

    @property
    def explained_fraction(self) -> float:
        return float(self.eigenvalues.sum()) / self.trace

    @property
    def effective_rank(self) -> float:
        """tr(F) / lambda_1."""
        return self.trace / float(self.spectrum[0])

    def project(self, inner_products: torch.Tensor) -> torch.Tensor:
        """Return V_k^T x from a = G x: c_j = u_j^T a / sqrt(n lambda_j).

        `inner_products` has shape (n,) or (n, M) for M vectors at once; the result has shape
        (k,) or (k, M).
        """
        scale = torch.sqrt(self.n * self.eigenvalues)  # (k,)
        projected = self.gram_eigenvectors.T @ inner_products.to(torch.float64)
        return projected / (scale if projected.ndim == 1 else scale[:, None])


def gram_matrix(gradients: torch.Tensor, chunk: int = 1 << 20) -> torch.Tensor:
    """Return K = (1/n) G G^T in float64, shape (n, n), accumulating over column chunks."""
    n, d = gradients.shape
    gram = torch.zeros((n, n), dtype=torch.float64)
    for start in range(0, d, chunk):
        block = gradients[:, start : start + chunk].to(torch.float64)
        gram += block @ block.T
    return gram / n


def fisher_subspace(
    gram: torch.Tensor, *, rho: float, k_max: int, gradient_dtype: torch.dtype
) -> FisherSubspace:
    """Pick the rank k and eigenpairs of the safety Fisher from its Gram matrix K.

    k is the smallest integer with sum_{j<=k} lambda_j >= rho * tr(F), measured against the
    whole trace, then capped by `k_max` and by the numerical rank.
    """
    n = gram.shape[0]
    eigenvalues, eigenvectors = torch.linalg.eigh(gram)  # ascending
    eigenvalues = eigenvalues.flip(0)
    eigenvectors = eigenvectors.flip(1)

    top = float(eigenvalues[0])
    if not torch.isfinite(eigenvalues).all():
        raise AnalysisError("safety Fisher: non-finite eigenvalues; the safety gradients contain NaN or Inf")
    if top <= 0.0:
        raise AnalysisError(
            "safety Fisher: all safety gradients are zero in the analysed scope; "
            "choose parameters that affect the responses with --params"
        )

    tolerance = top * max(n, 16) * torch.finfo(gradient_dtype).eps
    numerical_rank = int((eigenvalues > tolerance).sum())

    trace = float(eigenvalues.clamp(min=0).sum())
    cumulative = torch.cumsum(eigenvalues.clamp(min=0), dim=0)
    reached = torch.nonzero(cumulative >= rho * trace * (1 - 1e-12))
    k_rho = int(reached[0]) + 1 if len(reached) else n
    k = max(1, min(k_rho, k_max, numerical_rank))

    return FisherSubspace(
        spectrum=eigenvalues,
        gram_eigenvectors=eigenvectors[:, :k].contiguous(),
        k=k,
        rho=rho,
        k_max=k_max,
        numerical_rank=numerical_rank,
        n=n,
    )


@dataclass(frozen=True)
class TensorSensitivity:
    """Share of the subspace's Fisher mass that falls on one parameter tensor."""

    tensor: str
    share: float
    """sum_{j<=k} lambda_j ||v_j restricted to the tensor||^2 / sum_{j<=k} lambda_j, in [0, 1]."""
    numel: int


@dataclass(frozen=True)
class EigenvectorEntry:
    """One large entry of an explicit eigenvector v_j."""

    eigenvector: int
    """j, 1-based."""
    tensor: str
    index: tuple[int, ...]
    value: float


def sensitivity_map(
    gradients: torch.Tensor,
    subspace: FisherSubspace,
    names: Sequence[str],
    shapes: Sequence[tuple[int, ...]],
    *,
    top_vectors: int = 3,
    top_entries: int = 5,
    columns: Sequence[slice] | None = None,
    chunk: int = 1 << 20,
) -> tuple[list[TensorSensitivity], list[EigenvectorEntry]]:
    """Build the sensitivity map by tensor and the largest entries of the top eigenvectors.

    V_k = G^T U_k diag(1 / sqrt(n lambda)) is built one column chunk of a tensor at a time,
    shape (c, k) with c <= `chunk`, so no more than one chunk of V_k is held at once.
    With `columns` (sketched rows S G, one column range per tensor), the shares come from the
    sketched slices, whose squared norms are unbiased, and no entries are listed: sketched
    coordinates are not parameter coordinates.
    """
    scale = torch.sqrt(subspace.n * subspace.eigenvalues)  # (k,)
    weights = subspace.eigenvalues / subspace.eigenvalues.sum()  # (k,)
    vectors_kept = min(top_vectors, subspace.k)

    rows: list[TensorSensitivity] = []
    candidates: list[EigenvectorEntry] = []
    offset = 0
    for name, shape in zip(names, shapes):
        numel = 1
        for size in shape:
            numel *= size
        span = slice(offset, offset + numel) if columns is None else columns[len(rows)]
        share = 0.0
        # Column chunks keep the float64 copy small for large tensors and for rows kept on disk.
        for start in range(span.start, span.stop, chunk):
            stop = min(start + chunk, span.stop)
            block = gradients[:, start:stop].to(torch.float64)  # (n, c)
            slice_vectors = (block.T @ subspace.gram_eigenvectors) / scale  # (c, k)
            share += float((slice_vectors.square().sum(dim=0) * weights).sum())
            if columns is not None:
                continue
            for j in range(vectors_kept):
                values, positions = torch.topk(slice_vectors[:, j].abs(), min(top_entries, stop - start))
                for position in positions.tolist():
                    flat = start - span.start + int(position)
                    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape)) if shape else ()
                    candidates.append(EigenvectorEntry(j + 1, name, index, float(slice_vectors[position, j])))
        rows.append(TensorSensitivity(tensor=name, share=share, numel=numel))
        offset += numel

    rows.sort(key=lambda row: row.share, reverse=True)
    entries: list[EigenvectorEntry] = []
    for j in range(1, vectors_kept + 1):
        mine = [e for e in candidates if e.eigenvector == j]
        mine.sort(key=lambda e: abs(e.value), reverse=True)
        entries.extend(mine[:top_entries])
    return rows, entries
