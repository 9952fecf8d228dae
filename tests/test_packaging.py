"""Packaging: the core is the distribution gesso-core (PyPI's "gesso" is an unrelated project), every plugin
depends on it, nothing tells a user to install the bare name, and the wheels hold what the code loads."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from email.message import Message
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
DISTRIBUTION_DIRS = [ROOT / "core", *PLUGIN_DIRS]
FIXTURE_DIRS = sorted(p.parent for p in (ROOT / "tests" / "fixtures" / "dists").glob("*/pyproject.toml"))
# a pip (or uv pip) install command, with options or extras, naming the bare distribution "gesso": the wrong
# project. Built from two strings so that this file's own source does not match it.
BARE_INSTALL = re.compile(r"\bpip3?\s+install(?:\s+-\S+)*\s+" + "gesso" + r"(?![\w.-])")
REPOSITORY = "https://github.com/gesso-dev/gesso"
# what every published distribution declares (and Typing :: Typed where a py.typed ships)
CLASSIFIERS = {
    "Development Status :: 3 - Alpha",
    "Operating System :: OS Independent",
    "Programming Language :: Python :: 3",
    *(f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14)),
}


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
    # the families also depend on the Bedrock provider, another workspace member
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


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> dict[Path, Path]:
    """Every distribution's wheel (built as .ci/run does with python -m build), by distribution directory."""
    into = tmp_path_factory.mktemp("wheels")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
            "--wheel-dir", str(into), *map(str, DISTRIBUTION_DIRS),
        ],
        check=True,
    )  # fmt: skip
    built = {}
    for directory in DISTRIBUTION_DIRS:
        (built[directory],) = into.glob(pyproject(directory)["project"]["name"].replace("-", "_") + "-*.whl")
    return built


def wheel_metadata(wheel: Path) -> tuple[set[str], Message]:
    """The names in ``wheel`` and its METADATA's headers (the long description is the payload)."""
    with zipfile.ZipFile(wheel) as archive:
        contents = set(archive.namelist())
        (metadata,) = [n for n in contents if n.endswith(".dist-info/METADATA")]
        return contents, HeaderParser().parsestr(archive.read(metadata).decode())


@pytest.mark.slow
def test_the_wheels_are_named_and_filled_as_published(wheels):
    """Build every distribution's wheel and read what is inside."""
    for directory, wheel in wheels.items():
        name = pyproject(directory)["project"]["name"]
        contents, headers = wheel_metadata(wheel)
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
        p
        for d in DISTRIBUTION_DIRS
        for pattern in ("build", "dist", "*.egg-info", "src/*.egg-info")
        for p in d.glob(pattern)
    ]
    assert not left, f"building left files behind: {left}"


# -- published metadata: the license, classifiers, URLs and authors, and READMEs that read right on PyPI -----


def test_the_license_is_apache_2_0_in_full_beside_every_distribution():
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:5] == ["Apache", "License", "Version", "2.0,", "January"]
    for part in ("TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION", "END OF TERMS AND CONDITIONS"):
        assert part in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    assert text.rstrip().endswith("limitations under the License.")
    # each distribution directory is its own project root: a copy, since an sdist keeps a symlink as a link
    for directory in DISTRIBUTION_DIRS:
        copy = directory / "LICENSE"
        assert copy.is_file() and not copy.is_symlink(), f"{copy.relative_to(ROOT)}: copy the repository's LICENSE"
        assert copy.read_text() == text, f"{copy.relative_to(ROOT)} differs from the repository's LICENSE"


@pytest.mark.slow
def test_every_wheel_carries_the_license_classifiers_urls_and_authors(wheels):
    license_text = (ROOT / "LICENSE").read_text()
    for directory, wheel in wheels.items():
        name = pyproject(directory)["project"]["name"]
        contents, headers = wheel_metadata(wheel)
        licenses = [n for n in contents if n.endswith(".dist-info/licenses/LICENSE")]
        assert licenses, f"{name}: the wheel holds no LICENSE"
        with zipfile.ZipFile(wheel) as archive:
            assert archive.read(licenses[0]).decode() == license_text, name
        assert headers["License-Expression"] == "Apache-2.0" and "LICENSE" in headers.get_all("License-File"), name
        assert headers["Author"] == "The gesso authors", name
        assert headers["Keywords"], f"{name}: no keywords"
        classifiers = set(headers.get_all("Classifier") or ())
        missing = CLASSIFIERS - classifiers
        assert not missing, f"{name}: classifiers missing: {sorted(missing)}"
        # PEP 639 deprecates License :: classifiers: beside a License-Expression they may be refused on upload
        assert not [c for c in classifiers if c.startswith("License ::")], name
        typed = any(n.endswith("/py.typed") for n in contents)
        assert ("Typing :: Typed" in classifiers) == typed, f"{name}: Typing :: Typed exactly when py.typed ships"
        urls = dict(u.split(", ", 1) for u in headers.get_all("Project-URL") or ())
        assert set(urls) == {"Homepage", "Documentation", "Source", "Issues"}, f"{name}: {urls}"
        assert urls["Homepage"] == REPOSITORY and urls["Issues"] == f"{REPOSITORY}/issues", name
        assert urls["Documentation"].startswith(f"{REPOSITORY}/blob/main/README.md"), name
        assert urls["Source"].startswith(REPOSITORY), name


def distribution_readmes() -> list[Path]:
    return [directory / pyproject(directory)["project"]["readme"] for directory in DISTRIBUTION_DIRS]


# a Markdown link's target, inline ``[text](target)`` or a reference ``[label]: target``
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)|^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)


def test_the_readmes_link_nothing_that_breaks_on_pypi():
    """PyPI shows a README without its repository: a relative link leads nowhere, so links are absolute."""
    found = []
    for readme in distribution_readmes():
        for inline, reference in LINK.findall(readme.read_text()):
            target = inline or reference
            if not re.match(r"[a-z][a-z0-9+.-]*:|#", target, re.I):  # neither a URL nor an anchor of the page
                found.append(f"{readme.relative_to(ROOT)}: {target}")
    assert not found, "relative links in READMEs published on PyPI:\n" + "\n".join(found)


def test_the_link_pattern_finds_relative_links():
    text = "see [gesso](../../README.md), [ok](https://x.y/z#a), [here](#top)\n[ref]: ../CONTRIBUTING.md\n"
    assert [a or b for a, b in LINK.findall(text)] == [
        "../../README.md",
        "https://x.y/z#a",
        "#top",
        "../CONTRIBUTING.md",
    ]


def test_the_core_readme_says_the_bedrock_provider_holds_the_transport_and_emulator():
    text = (ROOT / "core" / "README.md").read_text()
    # every sentence naming Bedrock's transport, credentials or emulator says they come in gesso-bedrock
    sentences = re.split(r"(?<=[.;:])\s+(?=[A-Z(`-])|\n\s*[-*]\s+", " ".join(text.split("\n\n")))
    for sentence in sentences:
        if re.search(r"transport|emulator|credentials", sentence, re.I):
            assert "gesso-bedrock" in sentence, f"core/README.md gives the core what gesso-bedrock holds: {sentence!r}"
    assert "pip install gesso-core gesso-bedrock " in text
    assert "`proxy` extra" in text


def test_every_install_from_a_checkout_brings_the_bedrock_provider():
    """``pip install ./core ./plugins/bedrock_nova`` fails: the family needs gesso-bedrock, not on PyPI yet."""
    commands = [
        (readme, words)
        for readme in distribution_readmes()
        for line in readme.read_text().splitlines()
        for command in re.findall(r"pip3?\s+install\s+([^`\n]+)", line)
        for words in [command.split()]
        if any(w.startswith("./") for w in words)
    ]
    for readme, words in commands:
        paths = [w.rstrip(".,;") for w in words if w.startswith("./")]
        where = f"{readme.relative_to(ROOT)}: pip install {' '.join(words)}"
        assert all((ROOT / p / "pyproject.toml").is_file() for p in paths), f"{where}: names no distribution"
        if any(p.startswith("./plugins/bedrock_") for p in paths):
            assert "./plugins/bedrock" in paths, f"{where}: add ./plugins/bedrock (gesso-bedrock)"
        if any(p.startswith("./plugins/") for p in paths):
            assert "./core" in paths, where
    assert {readme for readme, _ in commands} == set(distribution_readmes()), "each says how to install from a checkout"
