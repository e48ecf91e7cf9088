"""The test suite starts the same local stack as `make run` (see localstack/processes.py)."""

from localstack.processes import (
    AzuriteInfo,
    EmulatorInfo,
    free_port,
    run_azurite,
    run_emulator,
)

__all__ = ["AzuriteInfo", "EmulatorInfo", "free_port", "run_azurite", "run_emulator"]
