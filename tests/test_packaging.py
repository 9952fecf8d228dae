"""Packaging: the core is the distribution gesso-core (PyPI's "gesso" is an unrelated project), every plugin
depends on it, nothing tells a user to install the bare name, and the wheels hold what the code loads."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.parser import HeaderParser
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parent.parent
CORE = "gesso-core"
PLUGIN_DIRS = sorted(p.parent for p in (ROOT / "plugins").glob("*/pyproject.toml"))
FIXTURE_DIRS = sorted(p.parent for p in (ROOT / "tests" / "fixtures" / "dists").glob("*/pyproject.toml"))
# a pip (or uv pip) install command, with options or extras, naming the bare distribution "gesso": the wrong
# project. Built from two strings so that this file's own source does not match it.
BARE_INSTALL = re.compile(r"\bpip3?\s+install(?:\s+-\S+)*\s+" + "gesso" + r"(?![\w.-])")


def pyproject(directory: Path) -> dict:
    return tomllib.loads((directory / "pyproject.toml").read_text())


def requirement_name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_the_core_distribution_is_gesso_core():
    core = pyproject(ROOT / "core")
    assert core["project"]["name"] == CORE
    assert core["project"]["scripts"] == {"gesso": "gesso.cli:main"}  # the command keeps its name
    assert core["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["src/gesso"]  # and the import


@pytest.mark.parametrize("directory", PLUGIN_DIRS, ids=lambda p: p.name)
def test_every_plugin_depends_on_gesso_core(directory):
    data = pyproject(directory)
    names = [requirement_name(r) for r in data["project"]["dependencies"]]
    assert CORE in names and "gesso" not in names
    # the families also depend on the Bedrock provider, another workspace member (issue 12)
    assert CORE in set(data["tool"]["uv"]["sources"])
    assert all(source == {"workspace": True} for source in data["tool"]["uv"]["sources"].values())


@pytest.mark.parametrize("directory", FIXTURE_DIRS, ids=lambda p: p.name)
def test_test_distributions_depend_on_gesso_core_if_on_anything(directory):
    names = [requirement_name(r) for r in pyproject(directory)["project"].get("dependencies", [])]
    assert "gesso" not in names


def repository_text_files() -> list[Path]:
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        # the issue that asked for the rename quotes the wrong command, should it ever be committed
        if not path.is_file() or "issue" in name.lower():
            continue
        if b"\0" not in path.read_bytes()[:8192]:
            files.append(path)
    return files


def test_the_pattern_catches_the_bare_name_only():
    said = "pip install " + "gesso"
    for wrong in (said, f"{said} gesso-bedrock-nova", f"`{said}`", f"pip install -U {said[12:]}", f"{said}[x]"):
        assert BARE_INSTALL.search(wrong), wrong
    for right in ("pip install gesso-core gesso-bedrock-nova", "pip install gesso_core", "pip install ./core"):
        assert not BARE_INSTALL.search(right), right


def test_nothing_tells_a_user_to_install_the_bare_name():
    files = repository_text_files()
    assert any(p.name == "README.md" for p in files)
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if BARE_INSTALL.search(line)
    ]
    assert not found, "PyPI's gesso is an unrelated project; tell users to install gesso-core:\n" + "\n".join(found)


@pytest.mark.slow
def test_the_wheels_are_named_and_filled_as_published(tmp_path):
    """Build every distribution's wheel (as .ci/run does with python -m build) and read what is inside."""
    directories = [ROOT / "core", *PLUGIN_DIRS]
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
            "--wheel-dir", str(tmp_path), *map(str, directories),
        ],
        check=True,
    )  # fmt: skip
    for directory in directories:
        name = pyproject(directory)["project"]["name"]
        (wheel,) = tmp_path.glob(name.replace("-", "_") + "-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            contents = set(archive.namelist())
            (metadata,) = [n for n in contents if n.endswith(".dist-info/METADATA")]
            headers = HeaderParser().parsestr(archive.read(metadata).decode())
        assert headers["Name"] == name
        assert headers["Description-Content-Type"] == "text/markdown"
        assert headers.get_payload().strip(), f"{name}: no long description (its README)"
        if name != CORE:
            assert any(requirement_name(r) == CORE for r in headers.get_all("Requires-Dist")), name
        shipped = {p.relative_to(directory / "src").as_posix() for p in (directory / "src").rglob("*.json")}
        assert shipped <= contents, f"{name}: package data missing from the wheel: {sorted(shipped - contents)}"
        sources = {p.relative_to(directory / "src").as_posix() for p in (directory / "src").rglob("*.py")}
        assert sources <= contents, f"{name}: modules missing from the wheel: {sorted(sources - contents)}"
    left = [
        p for d in directories for pattern in ("build", "dist", "*.egg-info", "src/*.egg-info") for p in d.glob(pattern)
    ]
    assert not left, f"building left files behind: {left}"
