"""The benchmark commands docs/benchmarks.md shows, run as real processes at tiny sizes (``--smoke``,
``--rows``, ``--mb``): each one runs end to end, prints its ratio lines and exits 0. Their figures are not
checked: benchmarks report, they do not gate (and tiny sizes measure nothing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.__main__ import BENCHMARKS
from localstack.processes import ROOT

MiB = 1024 * 1024
# `make bench` depends on `deps` (pip and npm installs): the test runs the recipe on the installed checkout.
NO_INSTALL = ("-o", ".venv/.installed", "-o", "node_modules/.installed")
# A table row: name, ours, baseline, ratio, target, result (columns two spaces apart at least).
_ROW = re.compile(
    r"^(?P<name>[a-z_0-9.]+)\s{2,}.*?\s{2,}(?P<ratio>\d+\.\d{3})\s{2,}[≥≤] \S+\s{2,}(PASS|FAIL)$"
)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _run(command: list[str], env: dict[str, str], timeout: float = 120) -> str:
    done = subprocess.run(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:]
    assert "could not run" not in done.stdout, done.stdout[-6000:]
    return done.stdout


def ratio_lines(output: str) -> dict[str, float]:
    """The results table of ``python -m bench``: measure name → ratio."""
    table = output[output.index("== results") :]
    return {m["name"]: float(m["ratio"]) for m in map(_ROW.match, table.splitlines()) if m}


def json_lines(output: str) -> list[dict[str, Any]]:
    """What ``python -m bench.<name>`` prints: one JSON result per line."""
    return [json.loads(line) for line in output.splitlines() if line.startswith('{"name": ')]


def test_make_bench_runs_every_benchmark_with_verbose_logs_and_json(tmp_path: Path) -> None:
    results_file = tmp_path / "results.json"
    bench_args = f"--smoke -v --json {results_file}"
    command = ["make", "--no-print-directory", *NO_INSTALL, "bench", f"PY={sys.executable}"]
    out = _run([*command, f"BENCH_ARGS={bench_args}"], _env(), timeout=240)
    assert "bench (smoke) on " in out
    for name in BENCHMARKS:
        assert f"== {name}: " in out
    ratios = ratio_lines(out)
    saved = json.loads(results_file.read_text(encoding="utf-8"))
    assert saved["smoke"] is True
    assert saved["errors"] == []
    assert {r["name"]: r["ratio"] for r in saved["results"]}.keys() == ratios.keys()
    assert {name.split(".")[0] for name in ratios} == set(BENCHMARKS)  # every benchmark gave its ratios
    for result in saved["results"]:
        assert abs(result["ratio"] - ratios[result["name"]]) < 0.0011
    assert ": retrying in " in out  # -v: the client's retry log lines (throttled_bulk hits the limit)


def test_one_benchmark_by_name_with_rows_and_quick() -> None:
    out = _run([sys.executable, "-m", "bench", "odata_extract", "--rows", "2000", "--quick"], _env())
    assert "bench (quick) on " in out
    assert set(ratio_lines(out)) == {"odata_extract.throughput", "odata_extract.peak_rss"}
    assert "(2,000 rows, median of 3)" in out  # --quick: three rounds; --rows: the size


def test_the_import_and_populate_benchmarks_by_name() -> None:
    out = _run([sys.executable, "-m", "bench", "imports_1gb", "populate_upsert", "--smoke"], _env())
    assert set(ratio_lines(out)) == {"imports_1gb.wall_time", "imports_1gb.peak_rss", "populate_upsert"}
    assert "== odata_extract" not in out


def test_imports_1gb_alone_with_size_format_and_compression_level() -> None:
    command = [sys.executable, "-m", "bench.imports_1gb", "--mb", "2", "--format", "CSV"]
    results = {r["name"]: r for r in json_lines(_run(command, _env(BENCH_IMPORTS_LEVEL="0")))}
    assert set(results) == {"imports_1gb.wall_time", "imports_1gb.peak_rss"}
    wall = results["imports_1gb.wall_time"]
    assert re.match(r"packaging \(CSV\) \+ SAS upload of a [23] MiB CSV", wall["measure"])  # ~--mb 2
    assert all(isinstance(r["ratio"], float) for r in results.values())
    [sizes] = [d for d in wall["details"] if d.startswith("packages in D365's dmf container")]
    packages = json.loads(sizes.split(": ", 1)[1])
    assert len(packages) == 3  # the warm-up and two rounds
    assert all(size > 2 * MiB for size in packages)  # BENCH_IMPORTS_LEVEL=0: stored, not deflated


def test_populate_upsert_alone_quick() -> None:
    out = _run([sys.executable, "-m", "bench.populate_upsert", "--quick"], _env())
    [result] = json_lines(out)
    assert result["name"] == "populate_upsert"
    assert result["ratio"] > 0
    assert result["details"][0].startswith("500 records: upsert ")
