"""CONTRIBUTING.md's plugin walkthrough works as written: its files are taken from the document, installed
with pip, checked with gesso.testing.FamilyContract and run from the CLI on the emulator; and the contract's
failures say what is wrong."""

from __future__ import annotations

import json
import os
import re
import shlex
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from gesso import plugins
from gesso.hookspecs import hookimpl
from gesso.testing import FamilyContract
from gesso.types import Model

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = "gesso-acme"
# a fenced block whose first line is a comment naming its file: ```python\n# gesso-acme/src/...\n
FILE_BLOCK = re.compile(r"```(?:toml|python)\n(# (gesso-acme/\S+)\n.*?)```", re.S)
COMMAND_BLOCK = re.compile(r"```bash\n(.*?)```", re.S)


def walkthrough() -> str:
    text = (ROOT / "CONTRIBUTING.md").read_text()
    return text.split("\n## Writing a model family plugin\n", 1)[1].split("\n## ", 1)[0]


def walkthrough_files() -> dict[str, str]:
    return {path: text for text, path in FILE_BLOCK.findall(walkthrough())}


def walkthrough_commands() -> list[str]:
    blocks = COMMAND_BLOCK.findall(walkthrough())
    assert len(blocks) == 1, "the walkthrough has one block of shell commands"
    return [line for line in blocks[0].splitlines() if line.strip() and not line.startswith("#")]


def test_the_walkthrough_holds_a_complete_distribution():
    files = walkthrough_files()
    assert set(files) == {
        "gesso-acme/pyproject.toml",
        "gesso-acme/src/gesso_acme/__init__.py",
        "gesso-acme/tests/test_contract.py",
    }
    pyproject = files["gesso-acme/pyproject.toml"]
    assert "[build-system]" in pyproject and re.search(r'^version = "', pyproject, re.M)
    assert 'dependencies = ["gesso-core>=0.1.0", "gesso-bedrock>=0.1.0"]' in pyproject  # a Bedrock family
    for name in ("n", "size", "quality"):  # each OpenAI parameter is honoured or refused, never ignored
        assert f"request.{name}" in files["gesso-acme/src/gesso_acme/__init__.py"]


def _env(site: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k not in ("GESSO_PLUGINS", "PYTHONPATH")}
    env.update(
        PYTHONPATH=str(site),
        AWS_CONFIG_FILE=str(site / "no-aws-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(site / "no-aws-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def _argv(command: str, site: Path) -> list[str]:
    """The walkthrough's command, run with this interpreter: pip installs into ``site``, offline."""
    words = shlex.split(command)
    if words[:2] == ["pip", "install"]:
        return [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
            "--target", str(site), *words[2:],
        ]  # fmt: skip
    if words[0] == "gesso":
        return [sys.executable, "-m", "gesso", *words[1:]]
    if words[:3] == ["python", "-m", "pytest"]:
        return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *words[3:]]
    raise AssertionError(f"the walkthrough's command {command!r} is not one this test knows how to run")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The walkthrough's files written where it says, and its commands run there in order."""
    root = tmp_path_factory.mktemp("walkthrough")
    for path, text in walkthrough_files().items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)
    return root


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(workdir):
    site = workdir / "site"
    outputs = {}
    for command in walkthrough_commands():
        out = subprocess.run(
            _argv(command, site), cwd=workdir, env=_env(site), capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, f"{command}\n{out.stdout}\n{out.stderr}"
        outputs[shlex.split(command)[1]] = out

    assert (site / "gesso_acme-0.1.0.dist-info" / "entry_points.txt").exists()
    rows = {row["name"]: row for row in json.loads(outputs["plugins"].stdout)}
    assert rows[PLUGIN]["models"] == ["acme.painter-v1", "us.acme.painter-v1"] and rows[PLUGIN]["error"] is None

    assert outputs["generate"].stdout.splitlines()[-2] == "cost: $0.0400 (2 images, acme.painter-v1)"
    pictures = sorted((workdir / "acme-out").glob("*.png"))
    assert len(pictures) == 2
    for picture in pictures:
        data = picture.read_bytes()
        assert data.startswith(b"\x89PNG") and struct.unpack(">II", data[16:24]) == (128, 64)

    assert re.search(r"\b4 passed\b", outputs["-m"].stdout), outputs["-m"].stdout  # the four contract checks


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["--quality", "hd"], "quality: must be standard or auto: Acme paints one quality (got 'hd')"),
        (["-n", "5"], "n: must be at most 4 (got 5)"),
        (["--size", "100x64"], "[from size]"),
        (["--size", "128x64", "-p", "width=64"], "width: contradicting values: 64 from width and 128 from size"),
        (["-p", "colour=red"], "colour: unknown parameter"),
    ],
)
def test_the_walkthrough_plugin_refuses_what_it_cannot_do(workdir, args, message):
    site = workdir / "site"
    if not (site / "gesso_acme").exists():
        subprocess.run(_argv(f"pip install ./{PLUGIN}", site), cwd=workdir, check=True)
    command = [sys.executable, "-m", "gesso", "generate", "a fox", "-m", "bedrock/acme.painter-v1", *args]
    out = subprocess.run(
        [*command, "--emulator", "-o", str(workdir / "refused")],
        cwd=workdir,
        env=_env(site),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "Invalid request for model acme.painter-v1" in out.stderr and message in out.stderr, out.stderr
    assert not (workdir / "refused").exists() or not list((workdir / "refused").iterdir())


# --------------------------------------------------------------------------------------------------
# FamilyContract's failures name the model and the rule it broke


class _Nameless:
    @hookimpl
    def gesso_register_models(self):
        return [Model(id="acme.x", family="acme.x", param_schema={"type": "object"}, emulator=lambda call: {})]


class _Priceless:
    @hookimpl
    def gesso_register_models(self):
        schema = {"type": "object"}
        return [Model(id="acme.y", family="acme.y", name="Y", param_schema=schema, prices={"image": -1})]


@pytest.mark.parametrize(
    "plugin, message",
    [
        (_Nameless(), "Model acme.x (from gesso-test) has no name: set Model(name=...)"),
        (_Priceless(), "Model acme.y (from gesso-test): prices must be non-negative numbers of USD, got {'image': -1}"),
    ],
)
def test_contract_failures_say_what_is_wrong(plugin, message):
    class Contract(FamilyContract):
        distribution = "gesso-test"
        examples = [("bedrock/acme.x", "a fox", {})]

    plugins.register_plugin(plugin, name="gesso-test")
    with pytest.raises(AssertionError) as info:
        Contract().test_registrations_are_well_formed(None)
    assert message in str(info.value)


def test_a_contract_without_settings_says_what_to_set():
    class Contract(FamilyContract):
        pass

    with pytest.raises(AssertionError, match=r"Contract: set distribution = "):
        Contract().test_registrations_are_well_formed(None)
