"""Report sections for per-record attribution and the what-if of dropping the riskiest records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .diagnostics.attribution import RecordScore
from .loading.records import Record, Role

SNIPPET_CHARACTERS = 80
TOP_RECORDS = 10


def snippet(record: Record) -> str:
    """Return the start of the record's first request (or its text), on one line."""
    for turn in record.turns:
        if turn.role in (Role.USER, Role.TEXT):
            text = " ".join(turn.content.split())
            return text if len(text) <= SNIPPET_CHARACTERS else text[: SNIPPET_CHARACTERS - 3] + "..."
    return ""


def rank_records(scores: Sequence[RecordScore]) -> list[RecordScore]:
    """Order records by their share of the forecast drift, largest first (ties by index)."""
    return sorted(scores, key=lambda score: (-score.drift_share, score.index))


def attribution_section(scores: Sequence[RecordScore], records: Mapping[int, Record]) -> dict | None:
    """Return the report's `attribution` section: every record's scores, riskiest first."""
    if not scores:
        return None
    ranked = rank_records(scores)
    top = ranked[:TOP_RECORDS]
    return {
        "ranked_by": "drift_share",
        "records_scored": len(ranked),
        "top_share": sum(score.drift_share for score in top),
        "records": [
            {
                "index": score.index,
                "snippet": snippet(records[score.index]) if score.index in records else "",
                "drift_share": score.drift_share,
                "epsilon_share": score.epsilon_share,
                "epsilon_fisher_share": score.epsilon_fisher_share,
                "gamma_share": score.gamma_share,
                "projected_norm": score.projected_norm,
                "overlap_ratio": score.overlap_ratio,
                "cosine_safety": score.cosine_safety,
            }
            for score in ranked
        ],
    }


def what_if_section(
    dropped: Sequence[int],
    before: Mapping[str, object],
    after: Mapping[str, object],
    exported: Mapping[str, object] | None,
) -> dict:
    """Return the report's `what_if` section: verdict and key numbers before and after the drop."""
    return {
        "dropped": list(dropped),
        "before": dict(before),
        "after": dict(after),
        "export": dict(exported) if exported else None,
    }
