"""The parameter scope: which parameters the diagnostics differentiate with respect to.

Patterns (`--params`) are shell globs over parameter names (`fnmatch.fnmatchcase`), or
regular expressions when prefixed `re:` (`re.search`, so unanchored). A parameter is in scope
when any pattern matches it. Names come from `model.named_parameters()`, which lists tied
weights once, under the name of their first occurrence.

Default scope: every 2-D weight matrix inside the last two transformer blocks (attention
q/k/v/o and MLP projections; embeddings, the LM head and norms excluded). For
SmolLM2-135M that is 2 x 3,538,944 = 7,077,888 parameters, so the per-sequence gradient
matrix for 128 safety sequences in float32 takes 128 x 7.08M x 4 bytes = 3.6 GB, where the
whole model (134.5M parameters) would need 69 GB for the same matrix.

Blocks are found generically from names such as `model.layers.<i>.`, `transformer.h.<i>.`
or `blocks.<i>.`. A model without such names falls back to all 2-D weights except
embeddings, up to 20M parameters.
"""

from __future__ import annotations

import fnmatch
import glob
import re
from dataclasses import dataclass
from typing import Any, Sequence

from riskgate.errors import UsageError

REGEX_PREFIX = "re:"
DEFAULT_BLOCK_COUNT = 2
FALLBACK_MAX_PARAMETERS = 20_000_000
_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
_EXAMPLE_NAME_COUNT = 5


@dataclass(frozen=True)
class Scope:
    """The analysed parameters, in model order."""

    names: tuple[str, ...]
    """Parameter names as `named_parameters()` lists them."""
    shapes: tuple[tuple[int, ...], ...]
    """Shape of each parameter, aligned with `names`."""
    numel: int
    """Total number of scalar parameters in scope (d in the diagnostics)."""
    patterns: tuple[str, ...]
    """Patterns that select exactly this scope (for the default, the escaped names)."""
    default_used: bool
    """True when no patterns were given and the default scope was chosen."""


def select_scope(model: Any, patterns: Sequence[str] | None) -> Scope:
    """Select the parameters matched by `patterns`, or the default scope when None or empty.

    Raises `UsageError` for a pattern that matches no parameter, an invalid `re:` pattern,
    or a model whose default scope cannot be determined within 20M parameters.
    """
    named = list(model.named_parameters())
    if not patterns:
        names = _default_scope_names(model, named)
        escaped = tuple(glob.escape(name) for name in names)
        return _build_scope(named, names, escaped, default_used=True)

    matchers = [_compile_pattern(pattern) for pattern in patterns]
    all_names = [name for name, _ in named]
    for pattern, matches in zip(patterns, matchers):
        if not any(matches(name) for name in all_names):
            examples = ", ".join(all_names[:_EXAMPLE_NAME_COUNT])
            raise UsageError(
                f"--params pattern {pattern!r}: matches no parameter; parameter names look like "
                f"{examples} (globs match whole names; prefix re: for a regular expression)"
            )
    selected = [name for name in all_names if any(matches(name) for matches in matchers)]
    return _build_scope(named, selected, tuple(patterns), default_used=False)


def enable_grad_for_scope(model: Any, scope: Scope) -> list[Any]:
    """Set requires_grad on the scope's parameters only; return them in scope order."""
    parameters = dict(model.named_parameters())
    missing = [name for name in scope.names if name not in parameters]
    if missing:
        raise UsageError(f"scope parameter {missing[0]!r}: not in this model; select the scope on the same model")
    model.requires_grad_(False)
    in_scope = [parameters[name] for name in scope.names]
    for parameter in in_scope:
        parameter.requires_grad_(True)
    return in_scope


def _compile_pattern(pattern: str):
    if pattern.startswith(REGEX_PREFIX):
        try:
            regex = re.compile(pattern[len(REGEX_PREFIX):])
        except re.error as error:
            raise UsageError(f"--params pattern {pattern!r}: invalid regular expression ({error})") from None
        return lambda name: regex.search(name) is not None
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def _default_scope_names(model: Any, named: list[tuple[str, Any]]) -> list[str]:
    excluded = _embedding_and_norm_ids(model)
    matrices = [(name, parameter) for name, parameter in named
                if parameter.ndim == 2 and id(parameter) not in excluded]

    # Group 2-D weights by block stack (the name prefix before the index) and block index.
    stacks: dict[str, dict[int, list[str]]] = {}
    for name, _ in matrices:
        found = _BLOCK_INDEX.search(name)
        if found:
            prefix = name[: found.start(1)]
            stacks.setdefault(prefix, {}).setdefault(int(found.group(1)), []).append(name)

    if stacks:
        # NOTE: a model with several block stacks (a vision tower beside the language model)
        # uses the stack with the most blocks, the later one on a tie.
        blocks = max(reversed(list(stacks.values())), key=len)
        last_indices = set(sorted(blocks)[-DEFAULT_BLOCK_COUNT:])
        chosen = {name for index in last_indices for name in blocks[index]}
        return [name for name, _ in named if name in chosen]

    fallback = [name for name, _ in matrices]
    total = sum(parameter.numel() for _, parameter in matrices)
    if not fallback or total > FALLBACK_MAX_PARAMETERS:
        raise UsageError(
            f"--params: no transformer blocks (layers.<i>., h.<i>., blocks.<i>.) found in "
            f"{type(model).__name__}, and its 2-D weights other than embeddings total {total:,} "
            f"parameters (limit {FALLBACK_MAX_PARAMETERS:,}); choose the scope with --params"
        )
    return fallback


def _embedding_and_norm_ids(model: Any) -> set[int]:
    """Return ids of embedding, LM head and normalisation parameters."""
    import torch

    excluded: set[int] = set()
    for module in model.modules():
        is_norm = "norm" in type(module).__name__.lower()
        if isinstance(module, torch.nn.Embedding) or is_norm:
            excluded.update(id(parameter) for parameter in module.parameters(recurse=False))
    get_output_embeddings = getattr(model, "get_output_embeddings", None)
    head = get_output_embeddings() if callable(get_output_embeddings) else None
    if head is not None:
        excluded.update(id(parameter) for parameter in head.parameters(recurse=False))
    return excluded


def _build_scope(
    named: list[tuple[str, Any]], names: Sequence[str], patterns: tuple[str, ...], *, default_used: bool
) -> Scope:
    selected_names = set(names)
    ordered = [(name, parameter) for name, parameter in named if name in selected_names]
    return Scope(
        names=tuple(name for name, _ in ordered),
        shapes=tuple(tuple(parameter.shape) for _, parameter in ordered),
        numel=sum(parameter.numel() for _, parameter in ordered),
        patterns=patterns,
        default_used=default_used,
    )
