"""The recurring data jobs every emulator start (and every admin reset) begins with; fixed ids, so local
configurations and docs can name them.
"""

from __future__ import annotations

from emulator.connector.model import Activity, Direction, JobType
from emulator.entra import SEED_CERT_CLIENT_ID, SEED_CLIENT_ID, SEED_SYSTEM_MI_CLIENT_ID, SEED_UAMI_CLIENT_ID

CUSTOMER_GROUPS_FILE_IMPORT_ID = "0a1b2c3d-d365-4e11-8f00-00000000d001"
PACKAGE_IMPORT_ID = "0a1b2c3d-d365-4e11-8f00-00000000d002"
CUSTOMERS_EXPORT_ID = "0a1b2c3d-d365-4e11-8f00-00000000d101"

# The seeded app registrations (emulator/entra.py): the authorization policy of the seeded jobs.
SEEDED_POLICY = tuple(
    i.lower() for i in (SEED_CLIENT_ID, SEED_CERT_CLIENT_ID, SEED_UAMI_CLIENT_ID, SEED_SYSTEM_MI_CLIENT_ID)
)

CUSTOMER_GROUPS_IMPORT_PROJECT = "Customer groups recurring import"
PACKAGE_IMPORT_PROJECT = "Recurring package import"
CUSTOMERS_EXPORT_PROJECT = "Customers-Export"  # the DMF's seeded export project (emulator/dmf/definitions.py)


def seeded_activities(default_company: str) -> list[Activity]:
    return [
        Activity(
            activity_id=CUSTOMER_GROUPS_FILE_IMPORT_ID,
            name="Import customer groups (file)",
            direction=Direction.IMPORT,
            job_type=JobType.FILE,
            data_project=CUSTOMER_GROUPS_IMPORT_PROJECT,
            entity="Customer groups",
            legal_entity=default_company,
            allowed_app_ids=SEEDED_POLICY,
            process_in_order=True,
        ),
        Activity(
            activity_id=PACKAGE_IMPORT_ID,
            name="Import data packages",
            direction=Direction.IMPORT,
            job_type=JobType.DATA_PACKAGE,
            data_project=PACKAGE_IMPORT_PROJECT,
            legal_entity=default_company,
            allowed_app_ids=SEEDED_POLICY,
        ),
        Activity(
            activity_id=CUSTOMERS_EXPORT_ID,
            name="Export customers (data package)",
            direction=Direction.EXPORT,
            job_type=JobType.DATA_PACKAGE,
            data_project=CUSTOMERS_EXPORT_PROJECT,  # customer groups and customers
            legal_entity=default_company,
            allowed_app_ids=SEEDED_POLICY,
            # Off, so benchmarks and other tests writing customers do not build packages in the
            # background; PATCH /_emulator/connector/activities/{id} {"export_on_change": true} turns it on.
            export_on_change=False,
        ),
    ]
