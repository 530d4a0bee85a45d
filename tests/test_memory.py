"""Choosing between exact and sketched gradients under a memory limit."""

from __future__ import annotations

import pytest

from riskgate.diagnostics.memory import MAX_SKETCH_WIDTH, MIN_SKETCH_WIDTH, parse_size, plan_memory
from riskgate.errors import EnvironmentFailure, UsageError

SMOLLM2 = dict(parameters_total=134_515_008, model_itemsize=4, itemsize=4)


@pytest.mark.parametrize("text, size", [("16G", 16 * 2**30), ("16GiB", 16 * 2**30), ("16GB", 16 * 10**9),
                                        ("500m", 500 * 2**20), ("1.5G", int(1.5 * 2**30)), ("4096", 4096)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "G", "16 X", "-1G", "1e9"])
def test_parse_size_rejects(text):
    with pytest.raises(UsageError, match="--max-memory"):
        parse_size(text)


def test_default_scope_fits_exactly():
    plan = plan_memory(numel=7_077_888, rows=192, limit_bytes=16 * 2**30, **SMOLLM2)
    assert plan.path == "exact"
    assert plan.sketch_width is None
    assert 192 * 7_077_888 * 4 < plan.estimated_bytes <= plan.limit_bytes


def test_whole_model_is_sketched_within_limit():
    plan = plan_memory(numel=134_515_008, rows=128, limit_bytes=16 * 2**30, **SMOLLM2)
    assert plan.path == "sketched"
    assert MIN_SKETCH_WIDTH <= plan.sketch_width <= MAX_SKETCH_WIDTH
    assert plan.estimated_bytes <= plan.limit_bytes


def test_sketch_width_shrinks_with_the_limit():
    wide = plan_memory(numel=134_515_008, rows=128, limit_bytes=40 * 2**30, **SMOLLM2)
    narrow = plan_memory(numel=134_515_008, rows=128, limit_bytes=12 * 2**30, **SMOLLM2)
    assert wide.sketch_width == MAX_SKETCH_WIDTH
    assert MIN_SKETCH_WIDTH <= narrow.sketch_width < wide.sketch_width
    assert narrow.estimated_bytes <= 12 * 2**30


def test_limit_below_any_sketch_fails():
    with pytest.raises(EnvironmentFailure, match="limit 2.0 GiB is too small"):
        plan_memory(numel=134_515_008, rows=128, limit_bytes=2 * 2**30, **SMOLLM2)
    with pytest.raises(UsageError, match="limit 2.0 GiB is too small"):
        plan_memory(numel=134_515_008, rows=128, limit_bytes=2 * 2**30, limit_given=True, **SMOLLM2)


def test_too_small_limit_suggests_a_spill_folder():
    with pytest.raises(UsageError, match="give --spill-dir DIR to keep the rows on disk"):
        plan_memory(numel=134_515_008, rows=128, limit_bytes=2 * 2**30, limit_given=True, **SMOLLM2)
