"""The package's layout (README "Layout"): one subpackage per stage, imports only down the
stack and never in a circle, modules and functions small enough to read."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = REPO / "src" / "llmbench"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
STAGES = ("host", "grid", "record", "measure", "run", "predict", "frontier", "report")


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_imports_point_down_the_stack_and_never_in_a_circle():
    """pyproject.toml's import-linter contracts: the layers and acyclic sibling modules."""
    beside_python = Path(sys.executable).with_name("lint-imports")
    lint_imports = str(beside_python) if beside_python.exists() else shutil.which("lint-imports")
    if lint_imports is None:
        pytest.fail("lint-imports not installed (requirements/test.txt has import-linter)")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    checked = subprocess.run(
        [lint_imports, "--no-cache"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "0 broken" in checked.stdout


def test_no_module_is_too_long_to_read():
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in modules()
        if (n := len(path.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_no_function_is_too_long_to_read():
    long = {}
    for path in modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long[f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}"] = lines
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_says_what_it_owns_and_what_it_may_import(stage):
    init = PACKAGE / stage / "__init__.py"
    doc = ast.get_docstring(ast.parse(init.read_text()))
    assert doc, f"{init} has no docstring"
    assert "may import" in doc.lower(), f"{init}'s docstring does not say what it may import"


@pytest.mark.parametrize(
    "command",
    [
        ["ruff", "check", "src", "scripts", "tests", "benchmarks"],
        ["ruff", "format", "--check", "src", "scripts", "tests", "benchmarks"],
        ["snakefmt", "--check", "Snakefile", "workflow/rules"],
    ],
)
def test_the_documented_lint_commands_pass(command):
    """README's Development section: the tools come with requirements/test.txt."""
    tool = Path(sys.executable).with_name(command[0])
    executable = str(tool) if tool.exists() else shutil.which(command[0])
    if executable is None:
        pytest.fail(f"{command[0]} not installed (requirements/test.txt has it)")
    checked = subprocess.run([executable, *command[1:]], cwd=REPO, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
