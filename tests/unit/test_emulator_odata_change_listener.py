"""``ODataStore.on_change``: listeners hear committed writes only, after the outermost commit."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from emulator.odata.store import ODataStore

Change = tuple[str, str, Any, Any]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ODataStore]:
    store = ODataStore(tmp_path / "d365.sqlite", seed=False)
    yield store
    store.close()


def group(name: str) -> dict[str, Any]:
    return {"dataAreaId": "usmf", "CustomerGroupId": name, "Description": f"group {name}"}


def test_listener_hears_create_update_delete_after_commit(store: ODataStore) -> None:
    heard: list[Change] = []
    store.on_change(lambda *change: heard.append(change), entity_sets={"CustomerGroups"})
    entity = store.entity("CustomerGroups")
    with store.transaction() as conn:
        rec_id = store.insert(conn, entity, group("10"))
        store.update(conn, entity, rec_id, {"Description": "changed"})
        assert heard == []  # nothing before the commit
    assert [(s, op) for s, op, _, _ in heard] == [("CustomerGroups", "create"), ("CustomerGroups", "update")]
    _, _, before, after = heard[1]
    assert before["Description"] == "group 10"
    assert after["Description"] == "changed"
    assert after["_RecVersion"] == before["_RecVersion"] + 1
    with store.transaction() as conn:
        store.delete(conn, entity, rec_id)
    assert heard[-1][1] == "delete"
    assert heard[-1][2]["CustomerGroupId"] == "10"
    assert heard[-1][3] is None


def write_then_fail(store: ODataStore, name: str) -> None:
    """A transaction (a savepoint when nested, like a batch changeset) that fails after its write."""
    with store.transaction() as conn:
        store.insert(conn, store.entity("CustomerGroups"), group(name))
        raise RuntimeError("abort")


def test_rolled_back_writes_are_never_heard(store: ODataStore) -> None:
    heard: list[Change] = []
    store.on_change(lambda *change: heard.append(change))
    with pytest.raises(RuntimeError):
        write_then_fail(store, "20")
    assert heard == []
    with store.transaction() as conn:
        store.insert(conn, store.entity("CustomerGroups"), group("30"))
        with pytest.raises(RuntimeError):
            write_then_fail(store, "40")
    assert [after["CustomerGroupId"] for _, _, _, after in heard] == ["30"]


def test_other_sets_and_unsubscribed_listeners_cost_nothing(store: ODataStore) -> None:
    heard: list[Change] = []
    unsubscribe = store.on_change(lambda *change: heard.append(change), entity_sets={"VendorsV2"})
    assert store.watched("VendorsV2")
    assert not store.watched("CustomerGroups")
    with store.transaction() as conn:
        store.insert(conn, store.entity("CustomerGroups"), group("50"))
    assert heard == []
    unsubscribe()
    assert not store.watched("VendorsV2")


def test_a_failing_listener_does_not_break_the_write(store: ODataStore) -> None:
    heard: list[Change] = []

    def broken(*change: Any) -> None:
        raise ValueError("listener bug")

    store.on_change(broken)
    store.on_change(lambda *change: heard.append(change))
    with store.transaction() as conn:
        store.insert(conn, store.entity("CustomerGroups"), group("60"))
    assert len(heard) == 1
    store.record_change("CustomerGroups", "update", None, {"CustomerGroupId": "60"})  # outside a transaction
    assert len(heard) == 2
