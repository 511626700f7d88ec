"""The layering the architecture relies on (docs/DEVELOPING.md): the CLI is a leaf over a pure library.

* no library module (anything outside ``latentpriv/cli/``) imports click or ``latentpriv.cli``, prints,
  or exits the process; user errors are ``latentpriv.errors`` exceptions that the CLI turns into one line;
* every CLI module stays a thin layer (at most :data:`CLI_MAX_LINES` lines).

The source is read with :mod:`ast`, so a forbidden call hidden in a function body is found too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import latentpriv

PACKAGE = Path(latentpriv.__file__).resolve().parent
CLI_MAX_LINES = 250
#: ``python -m latentpriv`` is the CLI's entry point; it is the one module outside cli/ that may import it.
ENTRY_POINTS = {"__main__.py"}


def _library_modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py")
                  if "cli" not in p.relative_to(PACKAGE).parts[:1] and p.name not in ENTRY_POINTS)


def _violations(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
        else:
            names = []
        for name in names:
            if name == "click" or name.startswith("click.") or name == "latentpriv.cli" \
                    or name.startswith("latentpriv.cli."):
                found.append(f"line {node.lineno}: imports {name}")
        if isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Name) and f.id in {"print", "exit", "quit"}:
                found.append(f"line {node.lineno}: calls {f.id}()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and \
                    (f.value.id, f.attr) in {("sys", "exit"), ("os", "_exit"), ("click", "echo")}:
                found.append(f"line {node.lineno}: calls {f.value.id}.{f.attr}()")
    return found


def test_the_scan_finds_what_it_forbids(tmp_path):
    # the checker itself must be able to fail
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nfrom latentpriv.cli.options import x\n\ndef f():\n    import click\n"
                   "    print(1)\n    sys.exit(2)\n")
    assert len(_violations(bad)) == 4


@pytest.mark.parametrize("path", _library_modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_library_module_is_not_a_cli(path):
    assert _violations(path) == [], f"{path.relative_to(PACKAGE)}: library code must not use the CLI layer"


@pytest.mark.parametrize("path", sorted((PACKAGE / "cli").glob("*.py")), ids=lambda p: p.name)
def test_cli_module_is_thin(path):
    lines = len(path.read_text().splitlines())
    assert lines <= CLI_MAX_LINES, f"cli/{path.name}: {lines} lines (at most {CLI_MAX_LINES}: move logic to the library)"
