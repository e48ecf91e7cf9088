"""Every command the docs show is run by a test, the demo or CI, or is marked as needing Azure.

How it works (tests/support/docs_commands.py): each command in a shell block of README.md and docs/*.md is
reduced to a signature (program, subcommand, options; method and path for HTTP calls), and
docs/commands-exercised.toml names the test that runs it; the named test must exist and its source must
hold that subcommand, every option, the method and the path. Commands that need Azure stand in a block
marked ``<!-- azure-only: reason -->`` and must really need it (``az``, ``func``, a non-loopback URL).
The synthetic cases below prove the check can fail.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from tests.support.docs_commands import (
    DocCommand,
    candidates,
    documented_commands,
    extract,
    load_mapping,
    verify,
)


def _doc(text: str) -> list[DocCommand]:
    return extract("docs/example.md", textwrap.dedent(text))


def test_every_documented_command_is_exercised_or_needs_azure() -> None:
    commands = documented_commands()
    assert len(commands) > 20  # the extraction found the docs' commands at all
    problems = verify(commands, load_mapping())
    hints = []
    for command in commands:
        if command.signature and command.azure_only is None and command.signature.key not in load_mapping():
            found = candidates(command.signature, limit=2)
            if found:
                hints.append(f"  {command.signature.key}: maybe {', '.join(found)}")
    message = "\n".join(problems + (["candidates:", *hints] if hints else []))
    assert problems == [], message


def test_shell_blocks_yield_commands_with_continuations_variables_and_placeholders() -> None:
    commands = _doc(
        """
        ```sh
        B=http://127.0.0.1:8765/_emulator
        curl -s -X PUT $B/limits -H 'content-type: application/json' \\
          -d '{"requests": {"enabled": true}}'   # change the limits
        curl -s $B/faults/<rule id> | jq .
        export X=1
        ```

        ```console
        $ python -m ops query CustomersV3 --top 5 --output rows.jsonl
        {"CustomerAccount": "US-001"}
        ```

            python -m ops check [--json] [--settings FILE]
            python -m ops replay-events --event-id 3C47A4CD
            OK   settings      valid
        """
    )
    keys = [c.signature.key if c.signature else None for c in commands]
    assert keys == [
        "curl PUT /_emulator/limits",
        "curl GET /_emulator/faults/<>",
        None,  # jq: a filter
        None,  # export: set-up
        "python -m ops query --output --top",
        "python -m ops replay-events --event-id",  # the synopsis line and the output are not commands
    ]
    assert commands[0].line == 4  # where the command starts in the file


def test_a_json_body_over_several_lines_is_one_command() -> None:
    commands = _doc(
        """
        ```sh
        curl -s -X POST http://127.0.0.1:8765/_emulator/apps -d '{
          "display_name": "x"}'
        make run
        ```
        """
    )
    assert [c.signature.key for c in commands if c.signature] == ["curl POST /_emulator/apps", "make run"]


def test_an_unmapped_command_and_a_test_that_does_not_run_it_both_fail() -> None:
    commands = _doc(
        """
        ```sh
        python -m ops check --json
        python -m ops replay-events --force
        ```
        """
    )
    wrong_test = "tests/integration/test_ops_cli.py::test_check_lists_every_configuration_problem"
    problems = verify(commands, {"python -m ops check --json": [wrong_test]})
    assert any("test_check_lists_every_configuration_problem does not run" in p and "'--json'" in p
               for p in problems)  # fmt: skip
    assert any("python -m ops replay-events --force` is not exercised" in p for p in problems)


def test_a_reference_to_a_missing_test_and_a_stale_entry_fail() -> None:
    commands = _doc("```sh\npython -m ops check\n```\n")
    problems = verify(
        commands,
        {
            "python -m ops check": ["tests/integration/test_ops_cli.py::test_that_does_not_exist"],
            "python -m ops gone": [
                "tests/integration/test_ops_cli.py::test_check_reports_every_dependency_ok"
            ],
        },
    )
    assert any("no function test_that_does_not_exist" in p for p in problems)
    assert any("`python -m ops gone` is no longer documented" in p for p in problems)


def test_a_real_test_satisfies_its_command() -> None:
    commands = _doc("```sh\npython -m ops check --json\n```\n")
    test = "tests/integration/test_ops_cli.py::test_check_reports_every_dependency_ok"
    assert verify(commands, {"python -m ops check --json": [test]}) == []


def test_http_commands_need_the_method_and_the_path() -> None:
    commands = _doc("```sh\ncurl -s -X DELETE http://127.0.0.1:8765/_emulator/limits\n```\n")
    only_reads = "tests/integration/test_emulator_faults.py::test_admin_api_is_never_faulted"
    problems = verify(commands, {"curl DELETE /_emulator/limits": [only_reads]})
    assert problems
    assert "does not run" in problems[0]


def test_azure_only_marks_need_a_reason_and_an_azure_command() -> None:
    commands = _doc(
        """
        <!-- azure-only: needs a subscription -->
        ```sh
        az functionapp identity assign --name my-app --resource-group rg
        curl -s "https://my-app.azurewebsites.net/api/health/ready?code=<key>"
        ```

        <!-- azure-only: -->
        ```sh
        python -m ops check
        ```
        """
    )
    assert [c.azure_only for c in commands] == ["needs a subscription"] * 2 + [""]
    problems = verify(commands, {})
    assert len(problems) == 2, problems
    assert "needs a reason" in problems[0]
    assert "runs without Azure" in problems[1]


def test_make_targets_must_exist(tmp_path: Path) -> None:
    commands = _doc("```sh\nmake no-such-target\n```\n")
    problems = verify(commands, {"make no-such-target": [".ci/run"]})
    assert any("the Makefile has no such target" in p for p in problems)


def test_an_http_call_shown_with_an_example_id_may_map_to_a_pattern() -> None:
    commands = _doc("```sh\ncurl -s -X DELETE http://127.0.0.1:8765/_emulator/faults/two-503\n```\n")
    test = "tests/integration/test_emulator_platform.py::test_faults_admin_roundtrip"  # deletes "faults/r1"
    assert verify(commands, {"curl DELETE /_emulator/faults/<>": [test]}) == []
    too_wide = verify(commands, {"curl DELETE /_emulator/<>/<>": [test]})  # a pattern cannot cover an API
    assert any("is not exercised" in p for p in too_wide)
    assert any("no longer documented" in p for p in too_wide)
