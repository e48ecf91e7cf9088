"""Route templates matched as the host's ASP.NET routing matches them."""

from __future__ import annotations

import pytest

from runner.routes import RouteError, RouteTable, parse_route


def match(template: str, path: str) -> dict[str, str] | None:
    return parse_route(template).match(path)


def test_literal_routes_are_case_insensitive_and_ignore_a_trailing_slash() -> None:
    table = RouteTable([parse_route("Orders/Open", target="open")])
    found = table.find("/orders/open/", "GET")
    assert found is not None
    assert found.route.target == "open"
    assert table.find("/orders", "GET") is None


def test_typed_and_optional_parameters() -> None:
    template = "items/{id:int}/{name?}"
    assert match(template, "/items/12") == {"id": "12"}
    assert match(template, "/items/12/bob") == {"id": "12", "name": "bob"}
    assert match(template, "/items/abc") is None
    assert match(template, "/items/99999999999") is None  # outside int32
    assert match(template, "/items/12/bob/extra") is None


def test_default_values_and_catch_all() -> None:
    assert match("reports/{year=2024}", "/reports") == {"year": "2024"}
    assert match("reports/{year=2024}", "/reports/1999") == {"year": "1999"}
    assert match("files/{*path}", "/files/a/b/c.txt") == {"path": "a/b/c.txt"}
    assert match("files/{**path}", "/files") == {}


def test_parameters_inside_a_segment() -> None:
    assert match("download/{name}.{ext:alpha}", "/download/report.v2.pdf") == {
        "name": "report.v2",
        "ext": "pdf",
    }


@pytest.mark.parametrize(
    ("constraint", "good", "bad"),
    [
        ("int", "-42", "4.2"),
        ("long", "9999999999", "x"),
        ("bool", "True", "yes"),
        ("alpha", "abcXYZ", "abc1"),
        ("guid", "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "not-a-guid"),
        ("datetime", "2024-05-01T10:00:00", "yesterday"),
        ("decimal", "12.50", "12,5"),
        ("double", "1e3", "e"),
        ("minlength(3)", "abc", "ab"),
        ("maxlength(3)", "abc", "abcd"),
        ("length(2)", "ab", "abc"),
        ("length(2,3)", "abc", "a"),
        ("min(10)", "10", "9"),
        ("max(10)", "10", "11"),
        ("range(1,5)", "5", "6"),
        ("regex(^[a-z]{{2}}:\\d+$)", "ab:12", "ab12"),
        ("int:min(1)", "3", "0"),
    ],
)
def test_constraints(constraint: str, good: str, bad: str) -> None:
    template = "c/{value:" + constraint.replace("{{", "{").replace("}}", "}") + "}"
    assert match(template, f"/c/{good}") == {"value": good}
    assert match(template, f"/c/{bad}") is None


def test_precedence_literal_then_constrained_then_plain_then_catch_all() -> None:
    table = RouteTable(
        [
            parse_route("items/{*rest}", target="catch-all"),
            parse_route("items/{name}", target="plain"),
            parse_route("items/{id:int}", target="int"),
            parse_route("items/new", target="literal"),
        ]
    )

    def target(path: str) -> str | None:
        found = table.find(path, "GET")
        return found.route.target if found else None

    assert target("/items/new") == "literal"
    assert target("/items/7") == "int"
    assert target("/items/seven") == "plain"
    assert target("/items/a/b") == "catch-all"


def test_methods_filter_routes_and_a_disallowed_method_finds_nothing() -> None:
    table = RouteTable(
        [
            parse_route("things", methods=["GET"], target="read"),
            parse_route("things", methods=["post"], target="write"),
        ]
    )
    read, write = table.find("/things", "GET"), table.find("/things", "POST")
    assert read is not None
    assert write is not None
    assert (read.route.target, write.route.target) == ("read", "write")
    assert table.find("/things", "DELETE") is None  # the host answers 404 here
    assert table.path_exists("/things")


def test_no_methods_means_every_method() -> None:
    route = parse_route("any")
    assert route.allows("PATCH")
    assert route.allows("HEAD")


def test_empty_template_matches_the_prefix_itself() -> None:
    table = RouteTable([parse_route("", target="root")])
    assert table.find("", "GET") is not None
    assert table.find("/x", "GET") is None


@pytest.mark.parametrize("template", ["a/{id:nope}", "a/{*rest}/b", "a/{1bad}", "a/{x:min(a)}"])
def test_invalid_templates(template: str) -> None:
    with pytest.raises(RouteError):
        parse_route(template)
