"""The ledger's rule table: what a drop does given the entry already there (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.pipelines.imports.ledger import Decision, InputRef, LedgerState, decide

THIS = InputRef("inbound", "a.csv", '"1"', "drop-this", 10)


def entry(state: LedgerState, drop_id: str, generation: int = 1) -> dict[str, Any]:
    return {"state": str(state), "generation": generation, "job_id": "r-x", "input": {"drop_id": drop_id}}


@pytest.mark.parametrize(
    ("state", "decision"),
    [
        (LedgerState.SENDING, Decision.RECOVER),
        (LedgerState.SENT, Decision.RESUME),
        (LedgerState.NOT_SENT, Decision.SEND),
        (LedgerState.SUCCEEDED, Decision.FINISHED),
        (LedgerState.FAILED, Decision.FINISHED),
        (LedgerState.UNCERTAIN, Decision.FINISHED),
    ],
)
def test_the_same_drop_continues_where_its_entry_stands(state: LedgerState, decision: Decision) -> None:
    for policy in ("skip", "reimport"):
        assert decide(entry(state, "drop-this", 2), THIS, policy) == (decision, 2)


@pytest.mark.parametrize(
    ("state", "skip", "reimport"),
    [
        (LedgerState.SENDING, Decision.DUPLICATE, Decision.BUSY),
        (LedgerState.SENT, Decision.DUPLICATE, Decision.SEND),
        (LedgerState.SUCCEEDED, Decision.DUPLICATE, Decision.SEND),
        (LedgerState.FAILED, Decision.DUPLICATE, Decision.SEND),
        (LedgerState.UNCERTAIN, Decision.DUPLICATE, Decision.SEND),
        (LedgerState.NOT_SENT, Decision.SEND, Decision.SEND),
    ],
)
def test_another_drop_of_the_same_content_follows_the_route_policy(
    state: LedgerState, skip: Decision, reimport: Decision
) -> None:
    assert decide(entry(state, "drop-other"), THIS, "skip")[0] is skip
    decision, generation = decide(entry(state, "drop-other"), THIS, "reimport")
    assert decision is reimport
    if decision is Decision.SEND:
        assert generation == 2  # a new generation: a new deterministic execution id
