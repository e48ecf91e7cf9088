"""Business events of the emulator (ref §5): a catalog of standard events with their real payload shapes,
endpoints and activations per legal entity, emission on OData changes and on demand, and delivery like
D365 (POST, timeout, retries, error log) with fault options. See docs/emulator.md, "Business events".

Other engines raise events with
``emulator.business_events.raise_event(state, event_id, legal_entity, fields)``.
"""

from emulator.business_events.admin import routes
from emulator.business_events.emission import raise_event
from emulator.business_events.payloads import PayloadError
from emulator.business_events.service import BusinessEvents, RaisedEvent

__all__ = ["BusinessEvents", "PayloadError", "RaisedEvent", "raise_event", "routes"]
