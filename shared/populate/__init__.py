"""Real-time populate: small files and HTTP requests written to D365 entities through OData (or a JSON custom
service) record by record, with one result per record.

- ``config``: route / target schema; ``records``: CSV, JSON, NDJSON readers; ``metadata``:
  ``$metadata`` models and their cache; ``convert``: values to the entity's types; ``writer``: read by
  key, plan, ``$batch``;
  ``service_route``: custom-service calls; ``results``: per-record results.
- ``file_route.populate_drop``: the ``odata``/``service`` import routes (called by the imports intake).
- ``http.populate_request``: the HTTP function's pipeline (blueprints/populate.py).
Docs: docs/populate.md. Kept import-light: ``shared.pipelines.imports.settings`` imports ``config``.
"""
