"""Compose the emulator: one Starlette app with every API family, served over HTTP and HTTPS."""
# Owned by the emulator-platform work; each API family contributes `routes(state)`.
