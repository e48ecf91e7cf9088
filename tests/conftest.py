"""Session fixtures: the real emulator over real HTTP and a real Azurite, started once per test worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.stack import AzuriteInfo, EmulatorInfo, run_azurite, run_emulator


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory, azurite: AzuriteInfo) -> Iterator[EmulatorInfo]:
    """One emulator process per test session (per xdist worker); its DMF package API uses ``azurite``."""
    with run_emulator(
        tmp_path_factory.mktemp("emulator"), blob_connection_string=azurite.connection_string
    ) as info:
        yield info


@pytest.fixture
def clean_emulator(emulator: EmulatorInfo) -> EmulatorInfo:
    """The session emulator with limits, faults, logs and seed data reset before the test."""
    emulator.admin("POST", "reset")
    return emulator


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteInfo]:
    with run_azurite() as info:
        yield info


@pytest.fixture(scope="session")
def samples_dir() -> Path:
    """The real samples: ../shared/samples beside the checkout when present, else the copy in tests/data."""
    here = Path(__file__).resolve().parents[1]
    for candidate in (here.parent / "shared" / "samples", here / "tests" / "data" / "samples"):
        if candidate.is_dir():
            return candidate
    pytest.fail("sample data not found (tests/data/samples is part of the repository)")
