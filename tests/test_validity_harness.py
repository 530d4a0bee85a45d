"""The validity harness in quick mode: it completes and its numbers are finite and consistent.

This checks the plumbing (alignment, check, fine-tune, measurements, analysis, plots), not a
scientific outcome: quick mode aligns for a few steps and fine-tunes for four.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

# The harness lives in benchmarks/, outside the installed package.
REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


@pytest.fixture(scope="module")
def quick_results(shared_data, smollm2_gguf, tmp_path_factory):
    from benchmarks.validity.run import main

    folder = tmp_path_factory.mktemp("validity")
    main([
        "--quick", "--data", str(shared_data), "--out", str(folder / "validity.json"),
        "--cache-dir", str(folder / "cache"), "--svg-dir", str(folder / "svg"), "--threads", "1",
    ])
    return json.loads((folder / "validity.json").read_text(encoding="utf-8")), folder


@pytest.mark.real_model
def test_quick_run_count(quick_results):
    results, _ = quick_results
    assert results["quick"] is True
    assert len(results["runs"]) == 2
    assert results["summary"]["runs_analysed"] == 2


@pytest.mark.real_model
def test_quick_step0_loss_matches_report(quick_results):
    results, _ = quick_results
    for run in results["runs"]:
        base = run["report"]["safety_mean_loss_at_base"]
        measured = run["measured"]["safety_loss_at_step0"]
        assert math.isfinite(base)
        assert abs(measured - base) <= 1e-3 * max(1.0, abs(base))


@pytest.mark.real_model
def test_quick_numbers_finite(quick_results):
    results, _ = quick_results
    for run in results["runs"]:
        measured = run["measured"]
        assert [point["step"] for point in measured["safety_loss"]][0] == 0
        assert measured["safety_loss"][-1]["step"] == run["plan"]["steps"]
        assert all(math.isfinite(point["loss"]) for point in measured["safety_loss"])
        assert 0.0 <= measured["refusal_rate"] <= 1.0
        assert math.isfinite(measured["utility_loss_after"])
        assert math.isfinite(run["report"]["checks"]["quartic_forecast"]["delta_u_at_planned_steps"])
        assert set(run["presets"]) == {"default", "strict", "permissive"}


@pytest.mark.real_model
def test_quick_forecast_reconstruction(quick_results):
    results, _ = quick_results
    for run in results["runs"]:
        forecast = run["report"]["checks"]["quartic_forecast"]
        last = run["trajectory"][-1]
        assert last["step"] == forecast["planned_steps"]
        assert last["predicted"] == pytest.approx(forecast["delta_u_at_planned_steps"], rel=1e-3, abs=1e-6)


@pytest.mark.real_model
def test_quick_spearman_in_range(quick_results):
    results, _ = quick_results
    for per_target in results["summary"]["spearman"].values():
        for value in per_target.values():
            assert value is None or -1.0 <= value <= 1.0


@pytest.mark.real_model
def test_quick_plots_written(quick_results):
    _, folder = quick_results
    plots = sorted(path.name for path in (folder / "svg").glob("validation-*.svg"))
    assert plots == ["validation-predicted-vs-measured.svg", "validation-refusal-drop.svg",
                     "validation-trajectories.svg"]
    assert (folder / "svg" / plots[0]).read_text(encoding="utf-8").startswith("<svg")


def test_spearman_known_values():
    from benchmarks.validity.analysis import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    assert spearman([1, 2], [1, 2]) is None
    assert spearman([1, 1, 1], [1, 2, 3]) is None
