"""The commands the docs show, and proof that a test (or the demo, or CI) runs each of them.

A *documented command* is every command line in a shell code block of README.md or docs/*.md (fenced
```sh / ```bash / ```shell / ```console, where console blocks count only their ``$ `` lines), plus every
line of another code block (untagged fence or indented block) that starts with a program this project
runs (``python -m ...``, ``make``, ``curl``, ``func``, ``az``...) and is not a synopsis (``[--option]``).

Each command reduces to a **signature**: the part that identifies what it does, independent of example
values. ``python -m ops query CustomersV3 --top 5`` → ``python -m ops query --top``;
``curl -s -X PUT $B/limits -d '...'`` → ``curl PUT /_emulator/limits``; ``make run`` → ``make run``.

``docs/commands-exercised.toml`` maps each signature to where it is run::

    [[command]]
    signature = "python -m ops check --json"
    by = ["tests/integration/test_ops_cli.py::test_check_reports_every_dependency_ok"]

and :func:`verify` checks every ``by`` entry against the source it names: the test function exists, and
its string literals hold the command's subcommand, every option and (for HTTP) the method and path; the
program itself (``ops``) may come from the test module or the ``tests/support`` helpers it imports. A
``by`` entry may also name any repository file (``.ci/run``, a demo module) whose text must hold the
command. A command block preceded by ``<!-- azure-only: reason -->`` needs no entry, but only commands
that need Azure may stand there (``az``, ``func``, or an HTTP call to a non-loopback host).
"""

from __future__ import annotations

import ast
import itertools
import re
import shlex
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
MAPPING = ROOT / "docs" / "commands-exercised.toml"
SELF_TEST = "tests/unit/test_docs_commands.py"
SHELL_LANGUAGES = {"sh", "bash", "shell", "console", "zsh"}
# Programs whose lines count as commands even outside a shell block.
KNOWN_PROGRAMS = {"python", "python3", "make", "curl", "func", "az", "npm", "npx", "pytest", "pip"}
# Environment set-up and text filters: shown to make an example complete, not behaviour of this project.
EXEMPT_PROGRAMS = {
    "export", "cd", "cp", "mv", "mkdir", "rm", "cat", "echo", "source", ".", "set", "unset", "true",
    "jq", "head", "tail", "grep", "less", "sort", "wc", "xargs", "tee", "sleep",
}  # fmt: skip
AZURE_ONLY_PROGRAMS = {"az", "func"}
_AZURE_MARK = re.compile(r"^<!--\s*azure-only:\s*(?P<reason>.*?)\s*-->$")
_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})\s*(?P<info>[^`\s]*)")
_PLACEHOLDER = re.compile(r"<[A-Za-z_][^<>\n]*>")
_PLACEHOLDER_TOKEN = "__PLACEHOLDER__"
_DOC_VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]*)=([^`\s]+)`")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_OPERATORS = {";", "&&", "||", "|", "&"}
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class Signature:
    """What identifies a command: ``key`` (the mapping key) and the tokens an exercising test must hold."""

    key: str
    program: tuple[str, ...] = ()  # found in the test module, its tests.support imports, or imported
    specific: tuple[str, ...] = ()  # string literals of the exercising function itself
    method: str | None = None  # HTTP
    path: tuple[str, ...] | None = None  # HTTP path segments ("*" = any one segment)
    alternatives: tuple[Signature, ...] = ()  # e.g. ``make run`` may be exercised by its recipe


@dataclass(frozen=True)
class DocCommand:
    doc: str
    line: int
    text: str
    signature: Signature | None  # None: an exempt program (export, jq...)
    azure_only: str | None = None  # the marker's reason

    def where(self) -> str:
        return f"{self.doc}:{self.line}"


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the block's first content line
    lines: list[str]
    shell: bool
    console: bool = False
    azure_only: str | None = None


# -- markdown


def iter_blocks(doc: str, text: str) -> Iterator[Block]:
    """Fenced and indented code blocks of a markdown text, with their azure-only marker."""
    lines = text.splitlines()
    index = 0
    previous_text = ""  # last non-blank line outside a block
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            marker, info = fence["fence"], fence["info"].lower()
            body: list[str] = []
            index += 1
            start = index + 1
            while index < len(lines) and not lines[index].lstrip().startswith(marker):
                body.append(lines[index])
                index += 1
            mark = _AZURE_MARK.match(previous_text.strip())
            yield Block(
                doc,
                start,
                body,
                shell=info in SHELL_LANGUAGES,
                console=info == "console",
                azure_only=mark["reason"] if mark else None,
            )
            previous_text = ""
            index += 1
            continue
        if (line.startswith("    ") or line.startswith("\t")) and not previous_text.strip():
            start = index + 1
            body = []
            while index < len(lines) and (
                lines[index].startswith("    ") or lines[index].startswith("\t") or not lines[index].strip()
            ):
                body.append(lines[index].strip())
                index += 1
            yield Block(doc, start, body, shell=False)
            previous_text = ""
            continue
        if line.strip():
            previous_text = line
        elif previous_text.strip() and not _AZURE_MARK.match(previous_text.strip()):
            previous_text = ""
        index += 1


def doc_variables(text: str) -> dict[str, str]:
    """``NAME=value`` definitions given in prose as inline code (e.g. ``B=http://.../_emulator``)."""
    return dict(_DOC_VARIABLE.findall(text))


def _logical_lines(block: Block) -> Iterator[tuple[int, str]]:
    """(line number, text) of each command line, with ``\\`` continuations joined."""
    pending: list[str] = []
    first = 0
    for offset, raw in enumerate(block.lines):
        line = raw.strip()
        if block.console and not pending:
            if not line.startswith("$ "):
                continue
            line = line[2:]
        if not pending:
            first = block.line + offset
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        joined = " ".join(part.strip() for part in pending).strip()
        if _open_quote(joined) and offset + 1 < len(block.lines):
            continue  # a quoted argument (a JSON body) goes on over the next lines
        pending = []
        if joined and not joined.startswith("#"):
            yield first, joined


def _open_quote(line: str) -> bool:
    try:
        shlex.split(_PLACEHOLDER.sub(_PLACEHOLDER_TOKEN, line), comments=True)
    except ValueError:
        return True
    return False


def _tokens(line: str) -> list[str]:
    """Shell words and operators; placeholders become one token; comments are dropped."""
    text = _PLACEHOLDER.sub(_PLACEHOLDER_TOKEN, line)
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # unbalanced quotes in an example: fall back to plain words
        return text.split("#", 1)[0].split()


def _simple_commands(words: list[str]) -> Iterator[list[str]]:
    current: list[str] = []
    for word in words:
        if word in _OPERATORS:
            if current:
                yield current
            current = []
        else:
            current.append(word)
    if current:
        yield current


def extract(doc: str, text: str) -> list[DocCommand]:
    """Every documented command of one markdown file."""
    found: list[DocCommand] = []
    prose_variables = doc_variables(text)
    for block in iter_blocks(doc, text):
        variables = dict(prose_variables)
        for number, line in _logical_lines(block):
            first = line.split(maxsplit=1)[0]
            if _is_synopsis(line) or (not block.shell and _program_name(first) not in KNOWN_PROGRAMS):
                continue
            for words in _simple_commands(_tokens(line)):
                assignments = []
                while words and _ASSIGNMENT.match(words[0]):
                    assignments.append(words.pop(0))
                if not words:  # only assignments: variables for the next lines of the block
                    for assignment in assignments:
                        name, _, value = assignment.partition("=")
                        variables[name] = value
                    continue
                words = [_substitute(word, variables) for word in words]
                signature = None if _program_name(words[0]) in EXEMPT_PROGRAMS else signature_of(words)
                found.append(DocCommand(doc, number, line, signature, azure_only=block.azure_only))
    return found


def _substitute(word: str, variables: dict[str, str]) -> str:
    return _VARIABLE.sub(lambda m: variables.get(m[1], m[0]), word)


def documented_commands(root: Path = ROOT) -> list[DocCommand]:
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    commands: list[DocCommand] = []
    for path in paths:
        if path.exists():
            commands.extend(extract(str(path.relative_to(root)), path.read_text(encoding="utf-8")))
    return commands


def _is_synopsis(line: str) -> bool:
    """A usage line (``[--json]``, ``(A | B)``, ``FILE...``) rather than a command to run."""
    return bool(re.search(r"\[-|\[[A-Z_]+\]|\.\.\.|\{[a-z]+\||\(\s*-", line))


# -- signatures


def _program_name(word: str) -> str:
    name = word.rsplit("/", 1)[-1]
    return "python" if re.fullmatch(r"python(3(\.\d+)?)?", name) else name


def _options(words: list[str]) -> tuple[str, ...]:
    return tuple(sorted({w.split("=", 1)[0] for w in words if w.startswith("-") and w != "-"}))


def signature_of(words: list[str]) -> Signature:
    program = _program_name(words[0])
    if program == "python" and len(words) > 2 and words[1] == "-m":
        return _python_module_signature(words[2], words[3:])
    if program == "make":
        return _make_signature(words[1:])
    if program == "curl":
        return _curl_signature(words[1:])
    if program == "pytest":
        return Signature("pytest", program=("pytest",))
    subcommands = [w for w in words[1:] if not w.startswith("-") and w != _PLACEHOLDER_TOKEN][:3]
    return Signature(" ".join([program, *subcommands]), program=(program,), specific=tuple(subcommands))


def _python_module_signature(module: str, rest: list[str]) -> Signature:
    first = rest[0] if rest else ""
    sub = first if re.fullmatch(r"[a-z][a-z0-9_-]*", first) else None
    options = _options(rest)
    key = " ".join(["python -m", module, *([sub] if sub else []), *options])
    return Signature(key, program=(f"-m {module}",), specific=(*([sub] if sub else []), *options))


@cache
def _make_recipes(root: Path = ROOT) -> dict[str, list[str]]:
    recipes: dict[str, list[str]] = {}
    target = None
    for line in (root / "Makefile").read_text(encoding="utf-8").splitlines():
        header = re.match(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", line)
        if header:
            target = header[1]
            recipes.setdefault(target, [])
        elif line.startswith("\t") and target:
            recipes[target].append(line.strip().lstrip("@"))
        elif line.strip() and not line.startswith("\t"):
            target = None
    return recipes


def _make_signature(rest: list[str]) -> Signature:
    target = next((w for w in rest if not w.startswith("-") and "=" not in w), "")
    alternatives = []
    for recipe in _make_recipes().get(target, []):
        words = recipe.replace("$(PY)", "python").replace("$(PYTHON)", "python").split()
        if len(words) > 2 and _program_name(words[0]) == "python" and words[1] == "-m":
            alternatives.append(_python_module_signature(words[2], words[3:]))
    return Signature(
        f"make {target}", program=("make",), specific=(target,), alternatives=tuple(alternatives)
    )


def _curl_signature(rest: list[str]) -> Signature:
    method, url, data = None, None, False
    takes_value = {"-X", "--request", "-H", "--header", "-d", "--data", "--data-binary", "--data-raw",
                   "-o", "--output", "-u", "--user", "-F", "--form", "-T", "--upload-file"}  # fmt: skip
    index = 0
    while index < len(rest):
        word = rest[index]
        if word in ("-X", "--request") and index + 1 < len(rest):
            method = rest[index + 1].upper()
        if word in ("-d", "--data", "--data-binary", "--data-raw", "-F", "--form"):
            data = True
        if word in takes_value:
            index += 2
            continue
        if not word.startswith("-") and url is None:
            url = word
        index += 1
    method = method or ("POST" if data else "GET")
    shown = "/".join("<>" if s == "*" else s for s in url_segments(url or "", strip=False))
    segments = url_segments(url or "")
    return Signature(f"curl {method} /{shown}", program=(), method=method, path=segments)


def url_segments(url: str, *, strip: bool = True) -> tuple[str, ...]:
    """Path segments of a URL or path, without host and query (and with ``strip``, without the
    ``/_emulator`` / ``/api`` prefixes a test helper adds); placeholders and f-string fields become ``*``."""
    text = url.replace(_PLACEHOLDER_TOKEN, "*").replace("<>", "*")
    text = re.sub(r"\{[^{}]*\}", "*", text)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "*", text)
    parts = urlsplit(text) if "://" in text else urlsplit("x://h/" + text.lstrip("/"))
    segments = [s for s in parts.path.split("/") if s]
    while strip and segments and segments[0] in ("*", "_emulator", "api"):
        segments.pop(0)
    return tuple(segments)


def is_azure_command(command: DocCommand) -> bool:
    """Whether a command needs Azure (and so may stand in an azure-only block)."""
    words = _tokens(command.text)
    program = _program_name(words[0]) if words else ""
    if program in AZURE_ONLY_PROGRAMS:
        return True
    if program == "curl":
        urls = [w for w in words if "://" in w]
        return bool(urls) and all((urlsplit(u).hostname or "") not in _LOOPBACK for u in urls)
    return False


# -- where commands are run


@dataclass
class SourceFacts:
    """String literals of one test function, and what its module offers for the program tokens."""

    literals: set[str] = field(default_factory=set)
    words: set[str] = field(default_factory=set)
    calls: set[str] = field(default_factory=set)
    module_words: frozenset[str] = frozenset()
    imports: frozenset[str] = frozenset()


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            v.value if isinstance(v, ast.Constant) and isinstance(v.value, str) else "{}" for v in node.values
        )
    return None


def _literals(node: ast.AST) -> set[str]:
    """String literals, plus ``-m X`` for every ``"-m", "X"`` pair in an argv list or call."""
    found = set()
    for child in ast.walk(node):
        text = _literal(child)
        if text is not None:
            found.add(text)
        items = child.elts if isinstance(child, ast.List | ast.Tuple) else None
        items = child.args if isinstance(child, ast.Call) else items
        if items:
            texts = [_literal(item) for item in items]
            found.update(f"-m {b}" for a, b in itertools.pairwise(texts) if a == "-m" and b)
    return found


def _words(literals: set[str]) -> set[str]:
    return {word for text in literals for word in text.split()} | literals


@cache
def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _support_literals(tree: ast.Module, root: Path) -> set[str]:
    """Literals of the ``tests.support`` modules a test module imports (command helpers live there)."""
    found: set[str] = set()
    for name in _imports(tree):
        if name.startswith("tests.support."):
            path = root / (name.replace(".", "/") + ".py")
            if path.exists():
                found |= _literals(_module(path))
    return found


def _find_function(tree: ast.Module, names: list[str]) -> ast.AST | None:
    scope: list[ast.stmt] = tree.body
    found: ast.AST | None = None
    for name in names:
        found = next(
            (
                node
                for node in scope
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and node.name == name
            ),
            None,
        )
        if found is None:
            return None
        scope = found.body
    return found


def source_facts(reference: str, root: Path = ROOT) -> SourceFacts | str:
    """Facts about ``path::function`` (or a whole file); a problem text when the reference is broken."""
    path_text, _, qualified = reference.partition("::")
    path = root / path_text
    if not path.is_file():
        return f"{reference}: no such file"
    if path.suffix != ".py":
        text = path.read_text(encoding="utf-8")
        words = set(text.split()) | {text}
        return SourceFacts(literals={text}, words=words, module_words=frozenset(words))
    tree = _module(path)
    module_words, imports = _module_facts(path, root)
    node: ast.AST = tree
    if qualified:
        names = qualified.split("[", 1)[0].split("::")
        found = _find_function(tree, names)
        if found is None:
            return f"{reference}: no function {'::'.join(names)} in {path_text}"
        node = found
    calls = {
        n.func.attr.lower()
        for n in ast.walk(node)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
    }
    literals = _literals(node)
    if node is not tree:  # what the test's own module-level helpers add (e.g. ``run_ops`` adds --settings)
        helpers = {
            n.name: n for n in tree.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("test_")
        }
        called = {
            n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        for name in called & set(helpers):
            literals |= _literals(helpers[name])
    return SourceFacts(literals, _words(literals), calls, module_words, imports)


@cache
def _module_facts(path: Path, root: Path) -> tuple[frozenset[str], frozenset[str]]:
    tree = _module(path)
    words = _words(_literals(tree) | _support_literals(tree, root))
    return frozenset(words), frozenset(_imports(tree))


def _path_matches(segments: tuple[str, ...], literal: str) -> bool:
    """Whether a test's string literal addresses the documented path. ``*`` on either side (a placeholder
    in the doc, a formatted value in the test) stands for one segment, but at least one segment must be
    spelled out on both sides; a literal of two or more segments may omit a prefix its helper adds, as
    long as its first segment is spelled out and equal."""
    candidate = url_segments(literal.split("?", 1)[0] if "://" not in literal else literal)
    if 2 <= len(candidate) < len(segments):  # e.g. ``catalog/X/schema`` under ``business-events/``
        segments = segments[len(segments) - len(candidate) :]
        if "*" in (candidate[0], segments[0]) or candidate[0] != segments[0]:
            return False
    if len(candidate) != len(segments):
        return False
    if not segments:
        return False  # the root is checked by ``_missing``
    pairs = list(zip(segments, candidate, strict=True))
    return all(a == b or "*" in (a, b) for a, b in pairs) and any(a == b != "*" for a, b in pairs)


def missing_tokens(signature: Signature, facts: SourceFacts) -> list[str]:
    """What of ``signature`` the exercising source lacks (empty: it runs the command)."""
    best: list[str] | None = None
    for candidate in (signature, *signature.alternatives):
        missing = _missing(candidate, facts)
        if not missing:
            return []
        best = missing if best is None or len(missing) < len(best) else best
    return best or []


def _missing(signature: Signature, facts: SourceFacts) -> list[str]:
    missing = []
    for token in signature.program:
        module = token.removeprefix("-m ")
        # a test may also call the module's entry point in-process: ``from ops.__main__ import main``
        imported = token.startswith("-m ") and bool(
            {f"{module}.__main__", f"{module}.__main__.main", f"{module}.main"} & facts.imports
        )
        if token not in facts.module_words and not imported:
            missing.append(f"program {token!r}")
    missing += [f"{token!r}" for token in signature.specific if token not in facts.words]
    if signature.method and signature.method != "GET":
        method = signature.method
        if (
            method not in {w.upper() for w in facts.words if w.isalpha()}
            and method.lower() not in facts.calls
        ):
            missing.append(f"method {method}")
    if signature.path == ():  # the API's root: the admin helper with an empty path, or the root URL
        if not (
            {"{}/_emulator", "{}/_emulator/"} & facts.literals
            or ("" in facts.literals and "admin" in facts.calls)
        ):
            missing.append("path /")
    elif signature.path is not None and not any(_path_matches(signature.path, t) for t in facts.literals):
        missing.append("path /" + "/".join(signature.path))
    return missing


def all_test_functions(root: Path = ROOT) -> Iterator[str]:
    """``path::name`` of every test function (top level or in a class) under tests/."""
    for path in sorted((root / "tests").rglob("test_*.py")):
        relative = str(path.relative_to(root))
        if relative == SELF_TEST:
            continue  # its synthetic docs hold commands it never runs
        for node in _module(path).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_"):
                yield f"{relative}::{node.name}"
            elif isinstance(node, ast.ClassDef):
                for inner in node.body:
                    if isinstance(inner, ast.FunctionDef) and inner.name.startswith("test_"):
                        yield f"{relative}::{node.name}::{inner.name}"


def candidates(signature: Signature, root: Path = ROOT, limit: int = 3) -> list[str]:
    """Test functions that hold everything ``signature`` needs (suggestions for the mapping)."""
    found = []
    for reference in all_test_functions(root):
        facts = source_facts(reference, root)
        if not isinstance(facts, str) and not missing_tokens(signature, facts):
            found.append(reference)
            if len(found) >= limit:
                break
    return found


# -- the mapping and the verdict


def load_mapping(path: Path = MAPPING) -> dict[str, list[str]]:
    data = tomllib.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    mapping: dict[str, list[str]] = {}
    for entry in data.get("command", []):
        mapping.setdefault(str(entry["signature"]), []).extend(str(b) for b in entry.get("by", []))
    return mapping


def _matching_pattern(signature: Signature, mapping: dict[str, list[str]]) -> str | None:
    """A mapping key for an HTTP call whose path shows example ids: ``curl DELETE /_emulator/faults/<>``
    covers ``curl DELETE /_emulator/faults/two-503``. Same method and length; ``<>`` stands only for
    segments after at least two fixed ones, so a pattern cannot cover a whole API."""
    if signature.method is None:
        return None
    shown = signature.key.split(" ", 2)[2].strip("/").split("/")
    for key in mapping:
        parts = key.split(" ", 2)
        if len(parts) != 3 or parts[:2] != ["curl", signature.method]:
            continue
        pattern = parts[2].strip("/").split("/")
        fixed = next((i for i, p in enumerate(pattern) if p == "<>"), len(pattern))
        if (
            len(pattern) == len(shown)
            and fixed >= 2
            and all(p in ("<>", s) for p, s in zip(pattern, shown, strict=True))
        ):
            return key
    return None


def verify(commands: list[DocCommand], mapping: dict[str, list[str]], root: Path = ROOT) -> list[str]:
    """Every problem: unexercised commands, broken references, misused azure-only marks, stale entries."""
    problems: list[str] = []
    used: set[str] = set()
    for command in commands:
        if command.signature is None:
            continue
        if command.azure_only is not None:
            if not command.azure_only:
                problems.append(f"{command.where()}: the azure-only mark needs a reason")
            if not is_azure_command(command):
                problems.append(
                    f"{command.where()}: `{command.text}` runs without Azure, so it must be exercised by a "
                    "test, not marked azure-only"
                )
            continue
        signature = command.signature
        if signature.key.startswith("make ") and not _make_recipes(root).get(signature.key[5:]):
            problems.append(f"{command.where()}: `{command.text}`: the Makefile has no such target")
        key = signature.key if signature.key in mapping else _matching_pattern(signature, mapping)
        references = mapping.get(key or "")
        if not key or not references:
            problems.append(
                f"{command.where()}: `{command.text}` is not exercised: add "
                f'[[command]] signature = "{signature.key}" with the test that runs it to {MAPPING.name}'
            )
            continue
        used.add(key)
        if key != signature.key:  # an HTTP call shown with an example id: the test may use another id
            signature = _curl_signature(["-X", signature.method or "GET", key.split(" ", 2)[2]])
        for reference in references:
            if reference.split("::", 1)[0] == SELF_TEST:
                problems.append(f"{command.where()}: {reference} only holds synthetic examples")
                continue
            facts = source_facts(reference, root)
            if isinstance(facts, str):
                problems.append(f"{command.where()}: {facts}")
                continue
            missing = missing_tokens(signature, facts)
            if missing:
                problems.append(
                    f"{command.where()}: {reference} does not run `{signature.key}` "
                    f"(lacks {', '.join(missing)})"
                )
    for key in sorted(set(mapping) - used):
        problems.append(f"{MAPPING.name}: `{key}` is no longer documented anywhere: remove the entry")
    return problems
