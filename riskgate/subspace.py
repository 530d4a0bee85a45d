"""The safety side of a check, saved once per base model and reused on every pull request.

The Fisher subspace depends on the model, the safety set, the parameter scope and the
sampling and length caps, not on the fine-tune data. `build_subspace` runs the safety pass and
writes a safetensors file with:

    gradients  (n, d) float32 per-sequence safety gradients, or (n, r) CountSketches of them
    gram       (n, n) float64 Gram matrix K = G G^T / n
    losses     (n,)   float64 per-sequence safety losses at theta*
    tokens, loss_mask, offsets, indices: the n encoded safety sequences (the sketched path
                      needs them for its exact-products pass, and they prove the tokenisation)

and, as metadata, the hashes and settings that must match for reuse. `check(..., subspace=FILE)`
verifies every one of them against its own inputs and then computes only the fine-tune side.
The rank rule (rho, k_max) is applied again from the check's policy, since it needs only K.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import SubspaceError

FORMAT = "riskgate-subspace"
FORMAT_VERSION = "1"
MATCHED_KEYS = ("model_sha256", "safety_sha256", "scope", "dtype", "max_seq_len", "max_safety_examples", "seed", "lora")
"""Metadata that must equal the check's own values for the file to be reused. The gradient
path and sketch width are taken from the file, since a check must use the same sketch."""


@dataclass(frozen=True)
class CachedSafetySide:
    """A subspace file's contents."""

    path: Path
    metadata: dict[str, Any]
    gradients: Any
    gram: Any
    losses: Any
    sequences: tuple


def write_subspace(path: Path, *, gradients, gram, losses, sequences, metadata: dict[str, Any]) -> None:
    """Write a subspace file; `metadata` values must be JSON-serialisable."""
    import torch
    from safetensors.torch import save_file

    lengths = [s.num_tokens for s in sequences]
    offsets = torch.tensor([0] + lengths, dtype=torch.int64).cumsum(0)
    tensors = {
        "gradients": gradients.contiguous(),
        "gram": gram.to(torch.float64).contiguous(),
        "losses": losses.to(torch.float64).contiguous(),
        "tokens": torch.tensor([t for s in sequences for t in s.input_ids], dtype=torch.int64),
        "loss_mask": torch.tensor([m for s in sequences for m in s.loss_mask], dtype=torch.uint8),
        "offsets": offsets,
        "indices": torch.tensor([s.index for s in sequences], dtype=torch.int64),
    }
    header = {"format": FORMAT, "format_version": FORMAT_VERSION}
    header.update({key: json.dumps(value) for key, value in metadata.items()})
    from safetensors import SafetensorError

    try:
        save_file(tensors, str(path), metadata=header)
    except (OSError, SafetensorError) as exc:
        from .errors import EnvironmentFailure

        reason = getattr(exc, "strerror", None) or exc
        raise EnvironmentFailure(f"{path}: cannot write the subspace file ({reason}); "
                                 "choose a writable path with free space") from exc


def read_subspace(path: str | Path) -> CachedSafetySide:
    """Read and validate a subspace file written by `write_subspace`."""
    from safetensors import SafetensorError, safe_open

    from .loading.records import EncodedSequence

    path = Path(path)
    if path.is_dir():
        raise SubspaceError(f"{path}: is a folder, not a subspace file; pass the file `riskgate subspace build` wrote")
    if not path.is_file():
        raise SubspaceError(f"{path}: subspace file not found; build it with `riskgate subspace build`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
            if header.get("format") != FORMAT:
                raise SubspaceError(f"{path}: not a riskgate subspace file; build one with `riskgate subspace build`")
            if header.get("format_version") != FORMAT_VERSION:
                raise SubspaceError(
                    f"{path}: subspace format version {header.get('format_version')!r}, this riskgate reads "
                    f"{FORMAT_VERSION!r}; rebuild it with `riskgate subspace build`"
                )
            # NOTE: this reads the rows into memory, also for a file built on the streamed path.
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise SubspaceError(f"{path}: cannot read the subspace file ({exc}); rebuild it with `riskgate subspace build`") from exc
    missing = {"gradients", "gram", "losses", "tokens", "loss_mask", "offsets", "indices"} - set(tensors)
    if missing:
        raise SubspaceError(f"{path}: tensor {sorted(missing)[0]!r} missing; rebuild it with `riskgate subspace build`")
    try:
        metadata = {k: json.loads(v) for k, v in header.items() if k not in ("format", "format_version")}
    except json.JSONDecodeError as exc:
        raise SubspaceError(f"{path}: metadata is not valid JSON ({exc}); rebuild it") from exc
    offsets = tensors["offsets"].tolist()
    tokens, mask, indices = tensors["tokens"].tolist(), tensors["loss_mask"].tolist(), tensors["indices"].tolist()
    n = len(indices)
    shapes_ok = (
        len(offsets) == n + 1 and offsets[-1] == len(tokens) == len(mask)
        and tensors["gradients"].shape[0] == n and tuple(tensors["gram"].shape) == (n, n)
        and tuple(tensors["losses"].shape) == (n,)
    )
    if not shapes_ok:
        raise SubspaceError(f"{path}: tensor shapes disagree with {n} sequences; rebuild it with `riskgate subspace build`")
    sequences = tuple(
        EncodedSequence(index=indices[i], input_ids=tuple(tokens[offsets[i]:offsets[i + 1]]),
                        loss_mask=tuple(bool(m) for m in mask[offsets[i]:offsets[i + 1]]))
        for i in range(n)
    )
    return CachedSafetySide(path, metadata, tensors["gradients"], tensors["gram"], tensors["losses"], sequences)


def check_matches(cached: CachedSafetySide, current: dict[str, Any], sequences) -> None:
    """Raise SubspaceError naming the first key where the file and the check's inputs differ."""
    for key in MATCHED_KEYS:
        stored, expected = cached.metadata.get(key), current.get(key)
        if stored != expected:
            if isinstance(stored, dict) and isinstance(expected, dict):
                # Name the first differing entry of a nested setting such as the LoRA adapter.
                inner = next(k for k in sorted(set(stored) | set(expected)) if stored.get(k) != expected.get(k))
                key, stored, expected = f"{key}.{inner}", stored.get(inner), expected.get(inner)
            raise SubspaceError(
                f"{cached.path}: {key} is {_short(stored)} in the subspace file but "
                f"{_short(expected)} for this check; rebuild it with `riskgate subspace build` "
                "using the same model, safety data, --params, --max-seq-len, --max-safety-examples, --seed "
                "and --lora-config"
            )
    same = len(sequences) == len(cached.sequences) and all(
        a.index == b.index and a.input_ids == b.input_ids and a.loss_mask == b.loss_mask
        for a, b in zip(sequences, cached.sequences)
    )
    if not same:
        raise SubspaceError(
            f"{cached.path}: the safety sequences tokenise differently than when the file was built "
            "(tokenizer or chat template changed); rebuild it with `riskgate subspace build`"
        )


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 80 else text[:77] + "..."
