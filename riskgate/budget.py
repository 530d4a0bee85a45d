"""Analysis budget: caps on examples, tokens and wall time, and what a run used of them."""

from __future__ import annotations

import time
from dataclasses import dataclass

from .errors import AnalysisError


@dataclass(frozen=True)
class Budget:
    """Limits of one analysis. `None` means no limit."""

    max_safety_examples: int | None = 128
    """Safety sequences analysed at most; the rest of the safety set is sampled out (counted)."""
    max_finetune_examples: int | None = 64
    """Fine-tune sequences analysed at most; the rest is sampled out (counted)."""
    max_seq_len: int = 256
    """Tokens per sequence at most; longer sequences are truncated (counted)."""
    time_budget_s: float | None = None
    """Wall-clock seconds for the diagnostics; a run that exceeds it stops with verdict `error`."""

    def to_dict(self) -> dict:
        return {
            "max_safety_examples": self.max_safety_examples,
            "max_finetune_examples": self.max_finetune_examples,
            "max_seq_len": self.max_seq_len,
            "time_budget_s": self.time_budget_s,
        }


class BudgetExhausted(AnalysisError):
    """The time budget ran out before the diagnostics finished."""


class Deadline:
    """Wall-clock deadline that long loops poll between sequences."""

    def __init__(self, seconds: float | None, clock=time.monotonic) -> None:
        self._clock = clock
        self._start = clock()
        self._seconds = seconds

    @property
    def elapsed_s(self) -> float:
        return self._clock() - self._start

    def check(self, stage: str) -> None:
        """Raise BudgetExhausted when the budget is spent; `stage` names where the run stopped."""
        if self._seconds is not None and self.elapsed_s > self._seconds:
            raise BudgetExhausted(
                f"time budget of {self._seconds:g} s exhausted during {stage}; "
                "raise --time-budget or lower --max-safety-examples/--max-finetune-examples"
            )
