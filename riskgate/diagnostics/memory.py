"""Choose how to keep the gradients so that a run stays within a memory limit.

Estimated resident memory, in bytes, for n + M gradient rows over d scoped parameters with
itemsize s (4 for float32 storage, 8 for float64 models) and a model of P parameters:

    fixed    = 4 * P * s_model      the model, what loading it leaves behind (a GGUF file is
                                    de-quantised through copies), activations and graphs
             + 8 * d * 8            (d,) vectors: mean, second moment, D, v, h, temporaries
                                    (float64 on the exact path; float32 when sketched, 8 * d * s)
             + 2 * (n + M) * c * 8  float64 column blocks of the inner products, c = min(d or r, 2^20)
             + 512 MiB              the interpreter and libraries
    exact    = fixed + (n + M) d s
    streamed = fixed                           (the (n + M) d s bytes of rows live in a file on disk)
    sketched = fixed' + 13 d + (n + M) r s     (13 d: the CountSketch's bucket, sign and float sign
                                               per coordinate; fixed' with vectors in the gradients' dtype)

The exact path is chosen when it fits the limit. Otherwise, with a spill folder (--spill-dir)
whose disk has room for the rows, the streamed path: the same exact rows in a memory-mapped
file, read back one column chunk at a time, so the results equal the exact path's and the
cost is disk traffic. Otherwise the widest sketch that fits, at most MAX_SKETCH_WIDTH buckets.
Pages of the mapped file that the kernel keeps cached count as reclaimable cache, not as the
process's own memory. These are estimates: the README run on SmolLM2-135M (default
scope, 168 rows) peaked at 10.5 GB against an estimate of 10.6 GB, and activation memory grows
with the micro-batch size and sequence length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import EnvironmentFailure, UsageError

MAX_SKETCH_WIDTH = 1 << 22
MIN_SKETCH_WIDTH = 1 << 12
_OVERHEAD = 512 * 2**20
_CHUNK = 1 << 20
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12, "tib": 2**40}


@dataclass(frozen=True)
class MemoryPlan:
    """The gradient path chosen for a run, and the figures behind the choice."""

    path: str
    """`exact`, `streamed` or `sketched`."""
    sketch_width: int | None
    limit_bytes: int
    estimated_bytes: int


def parse_size(text: str, option: str = "--max-memory") -> int:
    """Parse '16G', '16GB', '16GiB', '500M' or a byte count; G and GiB mean 2^30, GB 10^9."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise UsageError(f"{option}: {text!r} is not a size; write a number with an optional unit, e.g. 16G or 12000MB")
    value = int(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise UsageError(f"{option}: must be more than 0 bytes, got {text!r}")
    return value


def format_size(size: int) -> str:
    """Format a byte count with a binary unit, e.g. 1.5 GiB or 512 KiB."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} bytes"


def plan_memory(*, parameters_total: int, model_itemsize: int, numel: int, rows: int, itemsize: int,
                limit_bytes: int, limit_given: bool = False, spill_free_bytes: int | None = None) -> MemoryPlan:
    """Return the exact path if it fits `limit_bytes`, else the streamed path when
    `spill_free_bytes` (free disk space of the spill folder, None without one) has room for the rows,
    else the widest sketch that fits.

    A limit below any sketch raises UsageError when the user set it (`limit_given`), and
    EnvironmentFailure when it is the default share of the machine's memory.
    """
    fixed = 4 * parameters_total * model_itemsize + 8 * numel * 8 + 2 * rows * min(numel, _CHUNK) * 8 + _OVERHEAD
    exact = fixed + rows * numel * itemsize
    if exact <= limit_bytes:
        return MemoryPlan("exact", None, limit_bytes, exact)
    streamed = fixed if spill_free_bytes is not None and rows * numel * itemsize <= spill_free_bytes else exact
    if streamed <= limit_bytes:
        return MemoryPlan("streamed", None, limit_bytes, fixed)
    fixed = (4 * parameters_total * model_itemsize + 8 * numel * itemsize
             + 2 * rows * min(MAX_SKETCH_WIDTH, _CHUNK) * 8 + _OVERHEAD)
    room = limit_bytes - fixed - 13 * numel
    width = min(MAX_SKETCH_WIDTH, room // (rows * itemsize)) if room > 0 else 0
    if width < MIN_SKETCH_WIDTH:
        needed = min(fixed + 13 * numel + rows * MIN_SKETCH_WIDTH * itemsize, exact, streamed)
        error = UsageError if limit_given else EnvironmentFailure
        raise error(
            f"--max-memory: limit {format_size(limit_bytes)} is too small for {numel:,} parameters and {rows} "
            f"sequences (about {format_size(needed)} needed, estimated); raise --max-memory, narrow --params"
            f"{'' if spill_free_bytes is not None else ', give --spill-dir DIR to keep the rows on disk'}"
            " or lower --max-safety-examples/--max-finetune-examples"
        )
    return MemoryPlan("sketched", int(width), limit_bytes, fixed + 13 * numel + rows * int(width) * itemsize)
