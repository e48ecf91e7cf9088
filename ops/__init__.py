"""Operator commands for a checkout (development and operations only, never deployed): ``python -m ops``.

They build the app's own context from ``local.settings.json`` (else the sample) plus the environment, so the
same command works against the local stack and, with real settings, against Azure storage and D365.
"""
