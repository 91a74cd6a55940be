"""The docs name only what exists: README.md and docs/*.md are checked against the code (no Ray is started).

What a page may name, and where the real set comes from:

- a repo file or folder (``pipelines/server/``, ``deploy/serve_config*.yaml``, a relative link): the checkout;
- a Python module or object (``agents.memory``, ``pipelines.app:build_app``, ``serving.retry.RetryPolicy``): the
  module's source, read with ``ast`` (nothing is imported);
- a ``promptbeam`` command and its options (``promptbeam models fetch NAME --cache DIR``): the Typer app's registered
  commands (:data:`pipelines.cli.app`);
- a preset (``--preset world``, ``preset: gpu``, "the `sdxl` preset"): ``serving/presets/*.yaml``
  (:func:`serving.presets.available`);
- an HTTP route (``GET /v1/campaigns/{id}/results``): the routes of the ingress's FastAPI app
  (:data:`pipelines.server.ingress.api`, imported without starting Ray).

Only code is read as names: inline code spans, fenced blocks and link targets; prose is free. ``test_a_doc_that_
names_what_does_not_exist_fails`` feeds the checker a page with one wrong name of each kind.
"""

from __future__ import annotations

import ast
import functools
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGES = ("agents", "serving", "pipelines", "benchmarks", "tests")
TOP_LEVEL = (*PACKAGES, "deploy", "docs", "examples", "scripts", "requirements", ".ci", "wip")
ROOT_FILES = ("README.md", "LICENSE", "pyproject.toml", ".gitignore")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


@dataclass(frozen=True)
class Code:
    """The names the code defines."""

    commands: dict[tuple[str, ...], frozenset[str]]  # command path -> its options ((): the top level)
    presets: frozenset[str]
    routes: frozenset[tuple[str, str]]  # (method, path with every {parameter} written {})


@functools.cache
def real_names() -> Code:
    import typer

    from pipelines.cli import app
    from pipelines.server.ingress import api
    from serving.presets import available

    commands: dict[tuple[str, ...], frozenset[str]] = {}

    def walk(command, path: tuple[str, ...]) -> None:
        options = {o for p in command.params if p.param_type_name == "option" for o in (*p.opts, *p.secondary_opts)}
        commands[path] = frozenset(options | {"--help"})
        for name, sub in (getattr(command, "commands", None) or {}).items():
            walk(sub, (*path, name))

    walk(typer.main.get_command(app), ())
    routes = frozenset((method, route_key(route.path)) for route in api.routes
                       for method in getattr(route, "methods", None) or ())
    return Code(commands, frozenset(available()), routes)


def route_key(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path.split("?")[0]).rstrip("/") or "/"


# ------------------------------------------------------------------------------------------------------------------
# What a page says in code
# ------------------------------------------------------------------------------------------------------------------


def code_parts(text: str) -> tuple[list[str], list[str]]:
    """(code: every inline code span and fenced block line, link targets)."""
    code, prose = [], []
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        (code if fenced else prose).append(line)
    prose_text = "\n".join(prose)
    code += re.findall(r"``?([^`\n]+?)``?", prose_text)
    links = re.findall(r"\]\(([^)\s]+)\)", prose_text)
    return code, links


# ------------------------------------------------------------------------------------------------------------------
# Files and Python names
# ------------------------------------------------------------------------------------------------------------------


def check_file(token: str, base: Path) -> str | None:
    """A problem with a path a page names, or None. Globs must match something; ``<placeholders>`` are not paths."""
    path = token.split("#")[0].split("?")[0]
    path = re.sub(r":\d+(-\d+)?$", "", path)
    if not path or "<" in path or "{" in path:
        return None
    if not (base / path).resolve().is_relative_to(ROOT):
        return f"{token!r} lies outside the repository"
    if any(ch in path for ch in "*["):
        return None if list(base.glob(path)) else f"no file matches {token!r}"
    return None if (base / path).exists() else f"no file or folder {token!r}"


def repo_paths(snippet: str) -> list[str]:
    """Tokens of a code snippet that are paths inside this repository."""
    found = []
    for token in re.findall(r"[\w./*\-{}<>\[\]?:#]+", snippet):
        token = token.rstrip(".,:;)")
        if token.startswith("./"):
            token = token[2:]
        head = token.split("/")[0]
        if ("/" in token and head in TOP_LEVEL) or token in ROOT_FILES or token.startswith("../"):
            found.append(token)
    return found


def module_source(parts: list[str]) -> tuple[Path, int] | None:
    """(the file of the longest module prefix of ``parts``, how many parts it took)."""
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, n
    return None


def defined_names(body: list[ast.stmt]) -> dict[str, ast.AST]:
    names: dict[str, ast.AST] = {}
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names[node.name] = node
        elif isinstance(node, ast.Assign):
            names.update({t.id: node for t in node.targets if isinstance(t, ast.Name)})
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names[node.target.id] = node
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update({(a.asname or a.name).split(".")[0]: node for a in node.names})
        elif isinstance(node, (ast.If, ast.Try)):
            names.update(defined_names(node.body))
    return names


def check_python_name(token: str) -> str | None:
    """A problem with ``package.module[.Object[.attr]]`` or ``package.module:object``, or None."""
    module_part, _, attr = token.partition(":")
    parts = module_part.split(".") + ([attr] if attr else [])
    found = module_source(parts)
    if found is None:
        return f"no module {module_part!r}"
    path, used = found
    rest = parts[used:]
    if attr and used < len(module_part.split(".")):
        return f"no module {module_part!r}"
    scope = ast.parse(path.read_text()).body
    for depth, name in enumerate(rest):
        names = defined_names(scope)
        if name not in names:
            if depth == 0 and path.name == "__init__.py":
                return f"no module {'.'.join(parts[:used + 1])!r}"
            return f"{'.'.join(parts[:used + depth])} defines no {name!r} ({token!r})"
        node = names[name]
        if not isinstance(node, ast.ClassDef):
            return None  # attributes of functions and values are not followed
        scope = node.body
    return None


PYTHON_NAME = re.compile(rf"(?<![\w./-])((?:{'|'.join(PACKAGES)})(?:\.\w+)+(?::\w+)?)(?![\w/-])")


# ------------------------------------------------------------------------------------------------------------------
# Commands, presets, routes
# ------------------------------------------------------------------------------------------------------------------

COMMAND = re.compile(r"(?:^|(?<=[\s(`/]))promptbeam((?:[ \t]+[^\s`|]+)+)")


def check_command(words: list[str], code: Code) -> list[str]:
    """Problems with ``promptbeam WORDS...``: the command path must be registered and each --option must be its."""
    path: tuple[str, ...] = ()
    for word in words:
        if (*path, word) in code.commands:
            path = (*path, word)
        else:
            break
    subcommands = sorted(c[len(path)] for c in code.commands if len(c) == len(path) + 1 and c[:len(path)] == path)
    rest = words[len(path):]
    problems = []
    if subcommands and (not rest or not rest[0].startswith("-")):
        if rest and re.fullmatch(r"[a-z][a-z-]*", rest[0]):
            problems.append(f"`promptbeam {' '.join((*path, rest[0]))}` is not a command")
        return problems
    for word in rest:
        option = word.split("=")[0]
        if re.fullmatch(r"--[a-z][\w-]*", option) and option not in code.commands[path]:
            problems.append(f"`promptbeam {' '.join(path)}` has no option {option}")
    return problems


def command_words(snippet: str) -> list[list[str]]:
    """The words after each ``promptbeam`` in a code snippet, up to a shell operator or comment."""
    found = []
    snippet = re.sub(r"(^|\s)#.*$", "", snippet)  # a shell comment is prose
    for match in COMMAND.finditer(snippet):
        words = []
        for word in match[1].split():
            if word in ("&&", "||", "|", ";", "#", "\\") or word.startswith("#"):
                break
            words.append(word.strip("`,;[]"))
        found.append(words)
    return found


PRESET = re.compile(r"(?:--preset[ =]|\bpreset: *)([\w./{}-]+)")
NAMED_PRESET = re.compile(r"`([\w-]+)` preset|preset `([\w-]+)`")
ROUTE = re.compile(r"(?:\b(GET|POST|PUT|PATCH|DELETE)\b[\s|`]*)?(?<![\w:./])(/v1/[\w{}./-]*|/healthz)")


def check_preset(name: str, code: Code) -> str | None:
    if name.endswith((".yaml", ".yml")) or "/" in name or "{" in name or name.isupper():
        return None
    return None if name in code.presets else f"no preset {name!r} (serving/presets/ has {sorted(code.presets)})"


def check_route(method: str | None, path: str, code: Code) -> str | None:
    key = route_key(path)
    methods = {m for m, p in code.routes if p == key}
    if not methods:
        return f"no route {path!r}"
    if method and method not in methods:
        return f"no route {method} {path!r} (it takes {sorted(methods)})"
    return None


# ------------------------------------------------------------------------------------------------------------------
# The checker
# ------------------------------------------------------------------------------------------------------------------


def doc_problems(text: str, doc: Path, code: Code | None = None) -> list[str]:
    """Everything a page names in code that does not exist."""
    code = code or real_names()
    snippets, links = code_parts(text)
    problems: list[str] = []
    for target in links:
        if not re.match(r"[a-z]+:", target) and not target.startswith("#"):
            problems.append(check_file(target, doc.parent))
    for snippet in snippets:
        problems += [check_file(p, ROOT) for p in repo_paths(snippet)]
        problems += [check_python_name(m) for m in PYTHON_NAME.findall(snippet)]
        for words in command_words(snippet):
            problems += check_command(words, code)
        problems += [check_preset(m, code) for m in PRESET.findall(snippet)]
    for snippet in [*snippets, text]:
        problems += [check_route(method or None, path, code) for method, path in ROUTE.findall(snippet)]
    problems += [check_preset(a or b, code) for a, b in NAMED_PRESET.findall(text)]
    return sorted({p for p in problems if p})


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_every_name_a_doc_gives_exists(doc):
    assert doc_problems(doc.read_text(), doc) == []


def test_a_doc_that_names_what_does_not_exist_fails():
    """One wrong name of each kind, each beside a right one of the same kind: the wrong ones, and only they, are
    reported."""
    page = """
Run `promptbeam run examples/world.jsonl --preset world --out runs` or `promptbeam launch campaign.jsonl`.
`promptbeam models fetch NAME --cache DIR` works; `promptbeam submit x.jsonl --wait --follow` does not.
The `gpu` preset is real; so is `--preset tiny`; `--preset huge` is not, nor the `giant` preset.

| GET | `/v1/campaigns/{id}/results` | real |
| GET | `/v1/campaigns/{id}/thumbnails` | missing |
| PUT | `/v1/campaigns/{id}` | wrong method |

Modules: `agents.memory`, `pipelines.app:build_app`, `serving.retry.RetryPolicy`, `agents.memory.Lesson.before`;
wrong: `serving.clients.RetryLoop`, `pipelines.launcher`, `pipelines.app:launch`.
Files: `pipelines/server/`, `deploy/serve_config*.yaml`, [install](docs/install.md); wrong: `pipelines/frontdoor.py`,
`deploy/*.toml`, [gone](docs/nowhere.md), `../shared/gpu/fetch-wheels.sh`.

```bash
promptbeam world eval pipelines/world/weights --headroom
promptbeam world evaluate pipelines/world/weights   # wrong subcommand
```
"""
    problems = doc_problems(page, ROOT / "README.md")
    assert problems == sorted([
        "`promptbeam launch` is not a command",
        "`promptbeam submit` has no option --follow",
        "no preset 'huge' (serving/presets/ has " + str(sorted(real_names().presets)) + ")",
        "no preset 'giant' (serving/presets/ has " + str(sorted(real_names().presets)) + ")",
        "no route '/v1/campaigns/{id}/thumbnails'",
        "no route PUT '/v1/campaigns/{id}' (it takes ['DELETE', 'GET'])",
        "serving.clients defines no 'RetryLoop' ('serving.clients.RetryLoop')",
        "no module 'pipelines.launcher'",
        "pipelines.app defines no 'launch' ('pipelines.app:launch')",
        "no file or folder 'pipelines/frontdoor.py'",
        "no file matches 'deploy/*.toml'",
        "no file or folder 'docs/nowhere.md'",
        "'../shared/gpu/fetch-wheels.sh' lies outside the repository",
        "`promptbeam world evaluate` is not a command",
    ]), problems


def test_the_real_sets_come_from_the_code():
    """The checker's reference sets are not empty or stale: the commands, presets and routes the docs rely on."""
    code = real_names()
    assert {("run",), ("submit",), ("ls",), ("watch",), ("cancel",), ("results",), ("lessons",), ("models", "fetch"),
            ("world", "eval"), ("verify",)} <= set(code.commands)
    assert {"tiny", "world", "world-llm", "gpu", "sdxl", "flux-schnell"} <= code.presets
    assert {("POST", "/v1/campaigns"), ("GET", "/v1/campaigns"), ("GET", "/v1/campaigns/{}/lessons"),
            ("DELETE", "/v1/campaigns/{}"), ("GET", "/healthz")} <= code.routes


def test_the_readme_is_a_door():
    """Two screens: at most 200 lines of at most 120 characters; it links every page under docs/."""
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert [n for n, line in enumerate(lines, 1) if len(line) > 120] == []
    _, links = code_parts("\n".join(lines))
    linked = {(ROOT / link.split("#")[0]).resolve() for link in links if not re.match(r"[a-z]+:", link)}
    assert [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked] == []
