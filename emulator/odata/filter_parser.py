"""Tokenizer and precedence-climbing parser for OData v4 `$filter` (and the key-predicate lexer).

Sans-IO and schema-free: this module only turns text into tokens and an AST. Name resolution, type
checking and SQL generation live in `emulator.odata.query`. Error messages follow the wording of the
Microsoft OData library (ODL) that D365 F&O runs on, so clients see familiar text; positions are
0-based character offsets into the original option text, as in ODL.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, Final, TypeAlias


class ODataQueryError(Exception):
    """Invalid query option; the routes answer 400 with D365's error envelope using .message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ---------------------------------------------------------------------------------------------------------
# Literal normalisation (shared by filters, key predicates and literal_to_storage)
# ---------------------------------------------------------------------------------------------------------

_DTO_RE: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,12}))?)?([Zz]|[+-]\d{2}:\d{2})"
)
_DATE_RE: Final = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
_GUID_RE: Final = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")


def format_utc(value: datetime) -> str:
    """Storage text for a DateTimeOffset: UTC, whole seconds (strftime would not zero-pad years < 1000)."""
    v = value.astimezone(UTC)
    return f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}Z"


def normalise_datetimeoffset(text: str) -> str | None:
    """`2019-10-04T14:00:00.123+02:00` → `2019-10-04T12:00:00Z`; None when not a valid DateTimeOffset.

    Fractional seconds are truncated: F&O's utcdatetime has whole-second precision, so the conversion to
    it drops them (UNCONFIRMED in ref §1.3, which only shows whole-second literals).
    """
    m = _DTO_RE.fullmatch(text)
    if m is None:
        return None
    year, month, day, hour, minute = (int(m.group(i)) for i in range(1, 6))
    second = int(m.group(6) or 0)
    zone = m.group(8)
    try:
        if zone in ("Z", "z"):
            tz = UTC
        else:
            sign = -1 if zone[0] == "-" else 1
            hours, minutes = int(zone[1:3]), int(zone[4:6])
            if hours > 14 or minutes > 59:
                return None
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        return format_utc(datetime(year, month, day, hour, minute, second, tzinfo=tz))
    except (ValueError, OverflowError):
        return None


def normalise_date(text: str) -> str | None:
    """Validate `YYYY-MM-DD` (a real calendar date); None otherwise."""
    m = _DATE_RE.fullmatch(text)
    if m is None:
        return None
    try:
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3))).isoformat()
    except ValueError:
        return None


def normalise_guid(text: str) -> str | None:
    """Lowercase canonical 8-4-4-4-12 form; None when not a GUID."""
    return text.lower() if _GUID_RE.fullmatch(text) else None


# ---------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------

# Token kinds.
IDENT: Final = "ident"  # name, possibly dot-qualified; keywords (eq, and, true, null, ...) are idents too
STRING: Final = "string"
INT: Final = "int"  # Edm.Int32/Int64 literal
DECIMAL: Final = "decimal"
DOUBLE: Final = "double"
DATETIMEOFFSET: Final = "datetimeoffset"
DATE: Final = "date"
GUID: Final = "guid"
ENUM: Final = "enum"  # Qualified.Name'Member'; value = (type name as written, member)
LPAREN: Final = "("
RPAREN: Final = ")"
COMMA: Final = ","
SLASH: Final = "/"
EQUALS: Final = "="  # key predicates only
MINUS: Final = "-"  # unary negation (a '-' directly before digits is part of the number)
EOF: Final = "eof"

COLON: Final = ":"  # only meaningful in any()/all() lambdas, which are rejected with their own message
_PUNCTUATION: Final = {"(": LPAREN, ")": RPAREN, ",": COMMA, "/": SLASH, ":": COLON}

# Literal forms are tried before identifiers/numbers: a GUID may start with letters or digits, and a date
# starts like a number. The lookahead stops `2019-10-04x` or a GUID prefix of a longer word matching.
_END: Final = r"(?![0-9A-Za-z_.])"
_GUID_TOKEN: Final = re.compile(_GUID_RE.pattern + _END)
_DTO_TOKEN: Final = re.compile(_DTO_RE.pattern + _END)
_DATE_TOKEN: Final = re.compile(_DATE_RE.pattern + r"(?![0-9A-Za-z_.:])")
_NUMBER_TOKEN: Final = re.compile(
    r"-?\d+(?P<frac>\.\d+)?(?P<exp>[eE][+-]?\d+)?(?P<suffix>[mMdDfFlL](?![0-9A-Za-z_]))?"
)
_IDENT_TOKEN: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")

_INT64_MAX: Final = 2**63 - 1


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # exact source text
    pos: int  # 0-based offset in the option text
    value: Any = None  # converted literal value (see kinds above)


def syntax_error(pos: int, text: str) -> ODataQueryError:
    return ODataQueryError(f"Syntax error at position {pos} in '{text}'.")


def _read_string(text: str, start: int) -> tuple[str, int]:
    """Read a single-quoted literal at `start` ('' is an escaped quote); returns (value, end offset)."""
    i = start + 1
    out: list[str] = []
    while True:
        j = text.find("'", i)
        if j < 0:
            raise ODataQueryError(f"There is an unterminated string literal at position {start} in '{text}'.")
        out.append(text[i:j])
        if j + 1 < len(text) and text[j + 1] == "'":
            out.append("'")
            i = j + 2
            continue
        return "".join(out), j + 1


def _bad_literal(edm: str, literal: str, pos: int, text: str) -> ODataQueryError:
    return ODataQueryError(f"Unrecognized '{edm}' literal '{literal}' at '{pos}' in '{text}'.")


def _number_token(m: re.Match[str], pos: int, text: str) -> Token:
    raw = m.group(0)
    suffix = (m.group("suffix") or "").lower()
    digits = raw[:-1] if suffix else raw
    if suffix in ("d", "f") or m.group("exp"):
        return Token(DOUBLE, raw, pos, float(digits))
    if suffix == "m" or m.group("frac"):
        return Token(DECIMAL, raw, pos, float(digits))
    value = int(digits)
    if abs(value) > _INT64_MAX:  # too big for Edm.Int64: ODL falls back to a decimal literal
        return Token(DECIMAL, raw, pos, float(value))
    return Token(INT, raw, pos, value)


def tokenize(text: str, *, allow_equals: bool = False) -> list[Token]:
    """Split option text into tokens, ending with an EOF token positioned at len(text)."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch == "'":
            value, end = _read_string(text, i)
            tokens.append(Token(STRING, text[i:end], i, value))
            i = end
            continue
        if ch in _PUNCTUATION:
            tokens.append(Token(_PUNCTUATION[ch], ch, i))
            i += 1
            continue
        if ch == "=" and allow_equals:
            tokens.append(Token(EQUALS, ch, i))
            i += 1
            continue
        if m := _GUID_TOKEN.match(text, i):
            tokens.append(Token(GUID, m.group(0), i, m.group(0).lower()))
            i = m.end()
            continue
        if m := _DTO_TOKEN.match(text, i):
            raw = m.group(0)
            normalised = normalise_datetimeoffset(raw)
            if normalised is None:
                raise _bad_literal("Edm.DateTimeOffset", raw, i, text)
            tokens.append(Token(DATETIMEOFFSET, raw, i, normalised))
            i = m.end()
            continue
        if m := _DATE_TOKEN.match(text, i):
            raw = m.group(0)
            day = normalise_date(raw)
            if day is None:
                raise _bad_literal("Edm.Date", raw, i, text)
            tokens.append(Token(DATE, raw, i, day))
            i = m.end()
            continue
        if m := _NUMBER_TOKEN.match(text, i):
            tokens.append(_number_token(m, i, text))
            i = m.end()
            continue
        if ch == "-":
            tokens.append(Token(MINUS, ch, i))
            i += 1
            continue
        if m := _IDENT_TOKEN.match(text, i):
            end = m.end()
            if end < n and text[end] == "'":  # Type'Member' — an enum literal (ref §1.3)
                member, end = _read_string(text, end)
                tokens.append(Token(ENUM, text[i:end], i, (m.group(0), member)))
            else:
                tokens.append(Token(IDENT, m.group(0), i))
            i = end
            continue
        raise ODataQueryError(f"Syntax error: character '{ch}' is not valid at position {i} in '{text}'.")
    tokens.append(Token(EOF, "", n))
    return tokens


# ---------------------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------------------

LITERAL_KINDS: Final = frozenset({STRING, INT, DECIMAL, DOUBLE, DATETIMEOFFSET, DATE, GUID, ENUM})


@dataclass(frozen=True)
class Literal:
    kind: str  # a token literal kind, or "bool" / "null"
    value: Any
    raw: str
    pos: int


@dataclass(frozen=True)
class PathExpr:
    segments: tuple[str, ...]  # ("Name",) or ("SalesOrderHeader", "SalesOrderStatus")
    pos: int


@dataclass(frozen=True)
class UnaryExpr:
    op: str  # "not" | "neg"
    operand: Node
    pos: int


@dataclass(frozen=True)
class BinaryExpr:
    op: str  # eq ne gt ge lt le and or add sub mul div divby mod
    left: Node
    right: Node
    pos: int  # position of the operator


Node: TypeAlias = Literal | PathExpr | UnaryExpr | BinaryExpr

COMPARISON_OPS: Final = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
ADDITIVE_OPS: Final = frozenset({"add", "sub"})
MULTIPLICATIVE_OPS: Final = frozenset({"mul", "div", "divby", "mod"})
# Not supported by F&O (ref §1.3): rejected where they would be parsed as operators.
UNSUPPORTED_OPS: Final = frozenset({"has", "in"})
_KEYWORDS: Final = COMPARISON_OPS | ADDITIVE_OPS | MULTIPLICATIVE_OPS | UNSUPPORTED_OPS | {"and", "or", "not"}

# Standard OData v4 functions. Whether F&O evaluates them is UNCONFIRMED in ref §1.3; the documented way to
# do "contains" is the `eq '*value*'` wildcard, so the emulator rejects all of them (a client that works
# against the emulator then also works against F&O), with a hint where a wildcard form exists.
_FUNCTION_HINTS: Final = {
    "contains": "use Field eq '*value*'",
    "startswith": "use Field eq 'value*'",
    "endswith": "use Field eq '*value'",
    "tolower": "string comparisons are already case-insensitive",
    "toupper": "string comparisons are already case-insensitive",
}
_KNOWN_FUNCTIONS: Final = frozenset(
    {
        *_FUNCTION_HINTS,
        "length", "indexof", "substring", "trim", "concat", "matchesPattern",
        "year", "month", "day", "hour", "minute", "second", "fractionalseconds", "totalseconds",
        "date", "time", "totaloffsetminutes", "now", "maxdatetime", "mindatetime",
        "round", "floor", "ceiling", "isof", "cast",
        "geo.distance", "geo.intersects", "geo.length",
    }
)  # fmt: skip


def function_error(name: str) -> ODataQueryError:
    if name in _KNOWN_FUNCTIONS:
        hint = _FUNCTION_HINTS.get(name)
        return ODataQueryError(
            f"The query function '{name}' is not supported" + (f"; {hint}." if hint else ".")
        )
    return ODataQueryError(
        f"An unknown function with name '{name}' was found. This may also be a function import or a key "
        "lookup on a navigation property, which is not allowed."
    )


class _Parser:
    """Recursive descent, one method per precedence level (ref §1.3 operator list; OData v4 precedence:
    not/negation > mul div divby mod > add sub > eq ne gt ge lt le > and > or, all left-associative)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def _peek(self, offset: int = 1) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def _advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def _op(self, ops: frozenset[str]) -> str | None:
        tok = self.tok
        return tok.text if tok.kind == IDENT and tok.text in ops else None

    def parse(self) -> Node:
        node = self._or()
        if self.tok.kind != EOF:
            raise syntax_error(self.tok.pos, self.text)
        return node

    def _binary_level(self, ops: frozenset[str], operand: Callable[[], Node]) -> Node:
        left = operand()
        while (op := self._op(ops)) is not None:
            pos = self._advance().pos
            left = BinaryExpr(op, left, operand(), pos)
        return left

    def _or(self) -> Node:
        return self._binary_level(frozenset({"or"}), self._and)

    def _and(self) -> Node:
        return self._binary_level(frozenset({"and"}), self._comparison)

    def _comparison(self) -> Node:
        left = self._additive()
        while True:
            if (bad := self._op(UNSUPPORTED_OPS)) is not None:
                raise ODataQueryError(f"The query operator '{bad}' is not supported.")
            op = self._op(COMPARISON_OPS)
            if op is None:
                return left
            pos = self._advance().pos
            left = BinaryExpr(op, left, self._additive(), pos)

    def _additive(self) -> Node:
        return self._binary_level(ADDITIVE_OPS, self._multiplicative)

    def _multiplicative(self) -> Node:
        return self._binary_level(MULTIPLICATIVE_OPS, self._unary)

    def _unary(self) -> Node:
        tok = self.tok
        if tok.kind == IDENT and tok.text == "not":
            self._advance()
            return UnaryExpr("not", self._unary(), tok.pos)
        if tok.kind == MINUS:
            self._advance()
            return UnaryExpr("neg", self._unary(), tok.pos)
        return self._primary()

    def _primary(self) -> Node:
        tok = self.tok
        if tok.kind == LPAREN:
            self._advance()
            inner = self._or()
            if self.tok.kind != RPAREN:
                raise ODataQueryError(
                    f"')' or operator expected at position {self.tok.pos} in '{self.text}'."
                )
            self._advance()
            return inner
        if tok.kind in LITERAL_KINDS:
            self._advance()
            return Literal(tok.kind, tok.value, tok.text, tok.pos)
        if tok.kind != IDENT or tok.text in _KEYWORDS:
            raise ODataQueryError(f"Expression expected at position {tok.pos} in '{self.text}'.")
        if self._peek().kind == LPAREN:
            raise function_error(tok.text)
        if self._peek().kind != SLASH and tok.text in ("true", "false", "null"):
            self._advance()
            if tok.text == "null":
                return Literal("null", None, tok.text, tok.pos)
            return Literal("bool", tok.text == "true", tok.text, tok.pos)
        return self._path()

    def _path(self) -> PathExpr:
        first = self._advance()
        segments = [first.text]
        while self.tok.kind == SLASH:
            self._advance()
            seg = self.tok
            if seg.kind != IDENT:
                raise syntax_error(seg.pos, self.text)
            self._advance()
            if self.tok.kind == LPAREN:
                if seg.text in ("any", "all"):
                    raise ODataQueryError(f"The lambda operator '{seg.text}' is not supported.")
                raise function_error(seg.text)
            segments.append(seg.text)
        return PathExpr(tuple(segments), first.pos)


def parse_filter_ast(text: str) -> Node:
    """Parse `$filter` text into an AST (no schema knowledge; see query.compile_filter)."""
    return _Parser(text).parse()
