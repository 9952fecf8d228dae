"""The docs stay true: the Quickstart, the CI script, one documented heading per hook, and every page of
docs/: its Python blocks run on the emulator, its JSON blocks parse, it is in the site's navigation and the
README links to it."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from gesso import hookspecs
from gesso_bedrock.emulator import Emulator
from helpers import mask, picture

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
CONTRIBUTING = (ROOT / "CONTRIBUTING.md").read_text()
HOOKS = [name for name in dir(hookspecs) if name.startswith("gesso_")]
DOCS = sorted((ROOT / "docs").glob("*.md"))
# a fenced block, with the "<!-- not run: REASON -->" line that may stand right before it
BLOCK = re.compile(r"(?:<!-- not run: (?P<reason>[^\n]*?) -->\n)?```(?P<lang>[a-z]*)\n(?P<code>.*?)^```", re.S | re.M)
#: the files the docs' examples read, made in the directory the blocks run in
IMAGES = {
    **{name: picture(512, 512) for name in ("sketch.png", "palette.png", "a.png", "house.png", "bottle.png")},
    **{name: picture(512, 512) for name in ("person.png", "shirt.png", "garden.png", "product.png", "photo.png")},
    **{name: picture(512, 512) for name in ("beach.png", "small.png")},
    "product.jpg": picture(512, 512, fmt="JPEG"),
    "bottle-mask.png": mask(512, 512, (100, 100, 300, 300)),
    "door-mask.png": mask(512, 512, (100, 100, 300, 300)),
}
#: the application inference profile the SDK page's example invokes
PROFILES = {"a0a0a0a0a0a0": "amazon.nova-canvas-v1:0"}


def blocks(page: Path, lang: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, reason not run)`` of each ``lang`` block of ``page``, in order."""
    text = page.read_text()
    return [
        (text.count("\n", 0, m.start("code")) + 1, m["code"], m["reason"])
        for m in BLOCK.finditer(text)
        if m["lang"] == lang
    ]


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


@pytest.mark.parametrize("page", [p for p in DOCS if blocks(p, "python")], ids=lambda p: p.name)
def test_the_python_blocks_of_a_docs_page_run_on_the_emulator(page, monkeypatch, tmp_path):
    """Each page's Python blocks run in order in one namespace, as a reader would paste them, in a directory
    holding the images they name, with credentials and region in the environment and Bedrock's endpoint the
    emulator (botocore's AWS_ENDPOINT_URL_BEDROCK_RUNTIME). A block marked "not run" says why."""
    for name, data in IMAGES.items():
        (tmp_path / name).write_bytes(data)
    monkeypatch.chdir(tmp_path)
    with Emulator(port=0, application_profiles=PROFILES) as emulator:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", emulator.url)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "any")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "any")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
        namespace: dict = {"__name__": "__docs__"}
        ran = 0
        for line, code, reason in blocks(page, "python"):
            if reason is not None:
                assert reason.strip(), f"{page.name}:{line}: a block not run says why"
                continue
            exec(compile("\n" * (line - 1) + code, str(page), "exec"), namespace)
            ran += 1
        assert ran, f"{page.name}: every Python block is marked not run"


@pytest.mark.parametrize("page", [p for p in DOCS if blocks(p, "json")], ids=lambda p: p.name)
def test_the_json_blocks_of_a_docs_page_parse(page):
    for line, code, _ in blocks(page, "json"):
        for number, text in enumerate(code.splitlines(), line):
            assert isinstance(json.loads(text), dict), f"{page.name}:{number}: a JSONL line is an object"


def test_every_docs_page_is_in_the_site_and_linked_from_the_readme():
    site = (ROOT / "mkdocs.yml").read_text()
    for page in DOCS:
        assert re.search(rf"^\s+- [^:\n]+: {re.escape(page.name)}$", site, re.M), (
            f"{page.name} is not in mkdocs.yml's nav"
        )
        if page.name != "index.md":
            assert f"](docs/{page.name})" in README, f"README.md does not link to docs/{page.name}"


def test_the_readme_is_short_and_says_how_long_the_suite_takes():
    assert len(README.encode()) < 30_000
    assert re.search(r"about [0-9.–]+ minutes\*?\*? of pytest on a 2-core machine", README)
