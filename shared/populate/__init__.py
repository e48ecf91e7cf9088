"""Real-time populate: small files and HTTP requests written to D365 entities through OData (or a JSON custom
service) record by record, with one result per record.

- ``config``: route / target schema; ``records``: CSV, JSON, NDJSON readers (streamed); ``blob_input``: a
  dropped blob read in ranges and hashed; ``metadata``: ``$metadata`` models and their cache; ``convert``:
  values to the entity's types; ``items``: one record on its way (keys, legal entity); ``writer``: read by
  key, plan, ``$batch``; ``deadline``: a run's time limit; ``service_route``: custom-service calls;
  ``results``: per-record results.
- ``file_route.populate_drop``: the ``odata``/``service`` import routes (called by the imports intake).
- The HTTP function's pipeline is ``shared/pipelines/populate.py`` (blueprints/populate.py).
Docs: docs/populate.md. Kept import-light: ``shared.pipelines.imports.settings`` imports ``config``.
"""
