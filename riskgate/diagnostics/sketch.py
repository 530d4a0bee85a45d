"""Where gradients are kept: exactly in memory, or compressed by a CountSketch.

The checks need inner products between per-sequence gradients and a few vectors (the Gram
matrix K, G v, G u_m, G h_m), never the gradients themselves. When the n x d matrix G does not
fit the memory budget, each gradient is compressed as it is computed by a CountSketch S
(r x d): coordinate i goes to bucket b(i) with sign s(i), (S x)_j = sum_{i: b(i)=j} s(i) x_i.
For any a, b in R^d,

    E[<S a, S b>] = <a, b>,   Var[<S a, S b>] <= (2 / r) ||a||^2 ||b||^2,

so each inner product has a standard deviation of at most sqrt(2 / r) ||a|| ||b||, and
Chebyshev's inequality bounds the error by c sqrt(2 / r) ||a|| ||b|| with probability at least
1 - 1/c^2. Applying S costs O(d) per vector, whatever r is.

The sketch is block-diagonal over parameter tensors: tensor t gets r_t buckets in proportion
to its size, with a floor (plan_layout), so per-tensor shares (the sensitivity map) stay
available. A tensor with no more coordinates than its buckets is copied exactly. The bound
then applies with r = min over sketched tensors of r_t, which the report states.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class SketchLayout:
    """Bucket ranges of each parameter tensor in the sketched coordinates."""

    offsets: tuple[int, ...]
    """Start of tensor t's buckets; offsets[-1] is the width r."""
    exact: tuple[bool, ...]
    """True where tensor t is copied without compression."""

    @property
    def width(self) -> int:
        return self.offsets[-1]

    @property
    def min_sketched_width(self) -> int | None:
        widths = [self.offsets[t + 1] - self.offsets[t] for t in range(len(self.exact)) if not self.exact[t]]
        return min(widths) if widths else None

    @property
    def error_scale(self) -> float:
        """sqrt(2 / min r_t): one standard deviation of an inner product over ||a|| ||b||; 0 if exact."""
        smallest = self.min_sketched_width
        return 0.0 if smallest is None else math.sqrt(2.0 / smallest)


MIN_TENSOR_BUCKETS = 1024
"""Each sketched tensor gets at least this many buckets (or the whole width when smaller)."""


def plan_layout(sizes: Sequence[int], width: int) -> SketchLayout:
    """Give tensor t r_t = max(round(width * numel_t / d), min(numel_t, floor)) buckets.

    floor = min(MIN_TENSOR_BUCKETS, width). A tensor with numel_t <= r_t is copied exactly.
    The floor keeps small tensors from getting a handful of buckets, so the total width can
    exceed `width` by at most (number of tensors) x floor.
    """
    total = sum(sizes)
    floor = min(MIN_TENSOR_BUCKETS, width)
    offsets, exact, position = [0], [], 0
    for numel in sizes:
        share = max(round(width * numel / total), min(numel, floor))
        keep = numel <= share
        position += numel if keep else share
        offsets.append(position)
        exact.append(keep)
    return SketchLayout(tuple(offsets), tuple(exact))


class CountSketch:
    """A seeded CountSketch of the scoped parameters.

    `index` (d,) maps each coordinate to its bucket in [0, r) and `sign` (d,) contains s(i)
    in {-1, +1}. Coordinates of an exactly copied tensor keep their position and sign +1.
    """

    def __init__(self, sizes: Sequence[int], width: int, *, seed: int, device: torch.device | str = "cpu") -> None:
        self.sizes = list(sizes)
        self.layout = plan_layout(self.sizes, width)
        self.starts = [0]
        for numel in self.sizes:
            self.starts.append(self.starts[-1] + numel)
        total = self.starts[-1]
        self.index = torch.empty(total, dtype=torch.int64, device=device)
        self.sign = torch.ones(total, dtype=torch.int8, device=device)
        generator = torch.Generator().manual_seed(seed % (2**63))
        for t, numel in enumerate(self.sizes):
            span = slice(self.starts[t], self.starts[t + 1])
            first = self.layout.offsets[t]
            if self.layout.exact[t]:
                self.index[span] = torch.arange(first, first + numel, device=device)
                continue
            share = self.layout.offsets[t + 1] - first
            self.index[span] = torch.randint(0, share, (numel,), generator=generator).to(device) + first
            self.sign[span] = (2 * torch.randint(0, 2, (numel,), generator=generator, dtype=torch.int8) - 1).to(device)

    @property
    def width(self) -> int:
        return self.layout.width

    def signs(self, dtype: torch.dtype) -> torch.Tensor:
        """s as a (d,) tensor of `dtype`, converted once and kept: every sketched vector needs it."""
        cached = getattr(self, "_signs", None)
        if cached is None or cached.dtype != dtype:
            cached = self.sign.to(dtype)
            self._signs = cached
        return cached

    def columns(self, index: int) -> slice:
        """Sketched coordinates of tensor `index`."""
        return slice(self.layout.offsets[index], self.layout.offsets[index + 1])

    def apply(self, index: int, values: torch.Tensor) -> torch.Tensor:
        """Sketch rows of tensor `index`: (B, numel_t) -> (B, r_t), same dtype."""
        if self.layout.exact[index]:
            return values
        span = slice(self.starts[index], self.starts[index + 1])
        first = self.layout.offsets[index]
        share = self.layout.offsets[index + 1] - first
        signed = values * self.signs(values.dtype)[span]
        out = torch.zeros((values.shape[0], share), dtype=values.dtype, device=values.device)
        return out.index_add_(1, self.index[span] - first, signed)

    def apply_vector(self, vector: torch.Tensor) -> torch.Tensor:
        """Sketch a (d,) vector laid out like the scoped parameters: -> (r,)."""
        return self.scatter(vector * self.signs(vector.dtype))

    def scatter(self, signed: torch.Tensor) -> torch.Tensor:
        """Sum an already signed (d,) vector s * x into its buckets: -> (r,)."""
        out = torch.zeros(self.width, dtype=signed.dtype, device=signed.device)
        return out.index_add_(0, self.index, signed)
