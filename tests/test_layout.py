"""The code's own rules (issue 26), checked so that they stay true: small modules, short
functions, entry points that are siblings, and each shared rule defined in one place."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from helpers import REPO

PACKAGE = REPO / "fruitnet"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80
# A function may be longer when its file says why on the line before it.
EXCEPTION = re.compile(r"#\s*long function:", re.IGNORECASE)
# `python -m <module>` entry points: none may import another.
ENTRY_POINTS = {
    "fruitnet.train", "fruitnet.eval", "fruitnet.predict", "fruitnet.export",
    "fruitnet.search.__main__", "fruitnet.report.cli", "fruitnet.report.__main__",
    "fruitnet.models.__main__", "fruitnet.data.download", "fruitnet.study",
}  # fmt: skip


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_every_module_is_small():
    big = {_name(p): n for p in _modules() if (n := len(p.read_text().splitlines())) > 450}
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_every_function_is_short_or_says_why():
    long = []
    for path in _modules():
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and not EXCEPTION.search(lines[start - 2]):
                    long.append(f"{_name(path)}.{node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_no_entry_point_imports_another(entry):
    path = REPO / (entry.replace(".", "/") + ".py")
    others = ENTRY_POINTS - {entry} - {"fruitnet.report.__main__", "fruitnet.report.cli"}
    if entry == "fruitnet.report.__main__":  # `python -m fruitnet.report` is the CLI module
        others -= {"fruitnet.report.cli"}
    imported = _imports(path)
    assert not imported & others, f"{entry} imports {sorted(imported & others)}"
    if entry not in ("fruitnet.report.__main__", "fruitnet.report.cli"):
        assert not imported & {"fruitnet.report.cli", "fruitnet.report.__main__"}


def _code_facts(path: Path) -> tuple[set[str], set[str], set[str]]:
    """String constants (docstrings left out), called names and defined function names."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)
    }
    strings, calls, defs = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                strings.add(node.value)
        elif isinstance(node, ast.Call):
            calls.add(ast.unparse(node.func))
        elif isinstance(node, ast.FunctionDef):
            defs.add(node.name)
    return strings, calls, defs


# (what, where it lives, does a module's code hold its own copy?)
RULES = [
    ("the offline switch", "fruitnet.settings", lambda s, c, d: "FRUITNET_OFFLINE" in s),
    ("image extensions", "fruitnet.settings", lambda s, c, d: {".jpg", ".jpeg", ".png"} <= s),
    ("junk folder names", "fruitnet.settings", lambda s, c, d: bool({"__macosx", "__MACOSX"} & s)),
    ("atomic writes", "fruitnet.files", lambda s, c, d: "os.replace" in c),
    ("device sync", "fruitnet.timing", lambda s, c, d: "torch.cuda.synchronize" in c),
    ("the multirun test", "fruitnet.config", lambda s, c, d: bool({"_is_multirun"} & d)),
    ("the ONNX export call", "fruitnet.deploy", lambda s, c, d: "torch.onnx.export" in c),
    (
        "the ORT session",
        "fruitnet.deploy",
        lambda s, c, d: bool({"ort.InferenceSession", "onnxruntime.InferenceSession"} & c),
    ),
]


@pytest.mark.parametrize(("what", "home", "has_copy"), RULES, ids=[r[0] for r in RULES])
def test_each_rule_is_read_in_one_place(what, home, has_copy):
    copies = [_name(p) for p in _modules() if _name(p) != home and has_copy(*_code_facts(p))]
    assert not copies, f"{what} defined outside {home}: {copies}"


def test_every_package_ships_in_the_wheel():
    """A package missing from pyproject's list is missing from a non-editable install, where
    `python -m fruitnet.train` would fail importing it (an editable install hides that)."""
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        ".".join(init.parent.relative_to(REPO).parts)
        for init in (REPO / "fruitnet").rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    assert on_disk - listed == set(), (
        f"add to pyproject.toml [tool.setuptools] packages: {sorted(on_disk - listed)}"
    )


def test_shared_modules_import_no_entry_point():
    """An entry point reaching another through a shared module is the same coupling: the shared
    modules below the entry points import none of them."""
    leaks = {}
    for path in _modules():
        name = _name(path).removesuffix(".__init__")
        if name in ENTRY_POINTS or name == "fruitnet.report":  # report/__init__ re-exports its CLI
            continue
        hit = _imports(path) & ENTRY_POINTS
        if hit:
            leaks[name] = sorted(hit)
    assert not leaks, f"shared modules importing entry points: {leaks}"
