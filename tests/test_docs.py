"""The docs stay true: the Quickstart, the CI script, and one documented heading per hook."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gesso import hookspecs

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()
HOOKS = [name for name in dir(hookspecs) if name.startswith("gesso_")]


def quickstart_commands() -> list[str]:
    section = README.split("## Quickstart", 1)[1]
    block = re.search(r"```[a-z]*\n(.*?)```", section, re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_quickstart_first_block_holds_exactly_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert commands[0].startswith("python3 -m venv") and "gesso generate" in commands[0] and "--emulator" in commands[0]
    assert commands[1].startswith("python3 -m venv") and "pytest" in commands[1]


def test_ci_runs_the_readme_commands_verbatim():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in quickstart_commands():
        assert command in ci


def test_every_plugin_directory_is_installed_for_the_tests():
    wanted = {f"-e ./plugins/{p.name}" for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").exists()}
    assert wanted <= set((ROOT / "requirements-dev.txt").read_text().splitlines())


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_under_its_signature(hook):
    params = ", ".join(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert f"\n### {hook}({params})\n" in CONTRIBUTING
    assert getattr(hookspecs, hook).__doc__.count("Return") >= 1


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test_plugin(hook):
    sources = "".join(p.read_text() for p in (ROOT / "tests").rglob("*.py") if p.name != "test_docs.py")
    assert f"def {hook}(" in sources
