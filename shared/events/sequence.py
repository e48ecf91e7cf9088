"""ControlNumber high-water marks: which events arrive after a newer one of the same kind was handled.

D365's ``ControlNumber`` increases per event, with gaps (ref §5.1), so it can say "older than something
already seen" but never "something is missing". One mark per (business event id, legal entity) holds the
highest ControlNumber processed so far; it only moves up, through an ETag-guarded update, so concurrent
instances never lower it. An event below the mark is *out of order*: handlers may skip applying its (stale)
state change. The same event seen again (a retry or a replay) equals the mark and is not out of order.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from shared.events.layout import control_number_path
from shared.events.model import BusinessEvent, iso
from shared.status import utc_now
from shared.storage import BlobStore

__all__ = ["SequenceVerdict", "observe"]


@dataclass(frozen=True)
class SequenceVerdict:
    control_number: int | None
    high_water_mark: int | None  # the mark before this event was counted (None: first of its kind)
    out_of_order: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def observe(store: BlobStore, container: str, event: BusinessEvent) -> SequenceVerdict:
    """Count ``event`` in its mark and say whether it came after a newer one."""
    number = event.control_number
    if number is None or event.business_event_id is None:
        return SequenceVerdict(number, None, False)  # nothing to compare with
    name = control_number_path(event)
    current = store.read_json(container, name)
    if current is not None and isinstance(current.value, dict):
        mark = current.value.get("control_number")
        if isinstance(mark, int) and mark >= number:  # the common stale/repeat case costs one read
            return SequenceVerdict(number, mark, number < mark)
    seen: dict[str, int | None] = {}

    def raise_mark(value: Any) -> Any:
        previous = value.get("control_number") if isinstance(value, dict) else None
        seen["previous"] = previous if isinstance(previous, int) else None
        if isinstance(previous, int) and previous >= number:
            return value  # another instance raised it meanwhile; keep theirs
        return {
            "control_number": number,
            "event_id": event.event_id,
            "event_time": iso(event.event_time),
            "updated": utc_now(),
        }

    store.update_json(container, name, raise_mark)
    previous = seen.get("previous")
    return SequenceVerdict(number, previous, previous is not None and number < previous)
