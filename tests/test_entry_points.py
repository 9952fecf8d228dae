"""Entry-point discovery through real installed distributions (built and installed with pip)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "dists"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def site(tmp_path_factory) -> Path:
    """A directory with gesso-acme, gesso-broken and gesso-clash installed into it by pip."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [
            sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
            "--target", str(target), *(str(FIXTURES / name) for name in ("gesso-acme", "gesso-broken", "gesso-clash")),
        ],
        check=True,
    )  # fmt: skip
    assert (target / "gesso_acme-1.2.3.dist-info" / "entry_points.txt").exists()
    return target


def gesso(site: Path, *args: str, plugins: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "GESSO_PLUGINS"}
    env["PYTHONPATH"] = str(site)
    if plugins is not None:
        env["GESSO_PLUGINS"] = plugins
    return subprocess.run(
        [sys.executable, "-m", "gesso", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_installed_third_party_family_is_discovered(site):
    out = gesso(site, "plugins", plugins="gesso-acme,gesso-bedrock-nova")
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert set(rows) == {"gesso-acme", "gesso-bedrock-nova"}
    assert rows["gesso-acme"] == {
        "name": "gesso-acme",
        "version": "1.2.3",
        "hooks": ["gesso_calculate_cost", "gesso_parse_response", "gesso_register_models", "gesso_transform_request"],
        "models": ["acme.painter-v1", "us.acme.painter-v1"],
        "error": None,
    }


def test_third_party_family_generates_through_its_own_emulation(site, tmp_path):
    out = gesso(
        site, "generate", "a red fox", "-m", "bedrock/us.acme.painter-v1", "-n", "2", "-p", "steps=4",
        "--emulator", "-o", str(tmp_path), plugins="gesso-acme",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[-2:] == ["cost: $0.0400 (2 images, us.acme.painter-v1)", "(emulated: no Bedrock call was made)"]
    files = sorted(tmp_path.glob("*.png"))
    assert len(files) == 2 and all(f.read_bytes().startswith(b"\x89PNG") for f in files)


def test_a_plugin_that_fails_to_import_is_reported_and_skipped(site, tmp_path):
    out = gesso(site, "plugins", plugins="gesso-broken,gesso-bedrock-nova")
    assert out.returncode == 0, out.stderr
    rows = {row["name"]: row for row in json.loads(out.stdout)}
    assert rows["gesso-broken"]["error"] == (
        "import failed: ModuleNotFoundError: No module named 'gesso_dependency_that_is_not_installed'"
    )
    assert rows["gesso-broken"]["models"] == [] and rows["gesso-broken"]["version"] == "0.0.1"
    assert rows["gesso-bedrock-nova"]["error"] is None
    assert "gesso plugin gesso-broken was skipped" in out.stderr
    made = gesso(
        site,
        "generate",
        "otter",
        "-m",
        "bedrock/amazon.nova-canvas-v1:0",
        "--emulator",
        "-o",
        str(tmp_path),
        plugins="gesso-broken,gesso-bedrock-nova",
    )
    assert made.returncode == 0, made.stderr


def test_duplicate_ids_across_distributions_is_one_clear_error(site):
    out = gesso(site, "models")
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert "amazon.nova-canvas-v1:0: claimed by gesso-bedrock-nova, gesso-clash" in out.stderr
    listed = gesso(site, "plugins")
    assert listed.returncode == 0
    names = {row["name"] for row in json.loads(listed.stdout)}
    assert {"gesso-acme", "gesso-broken", "gesso-clash", "gesso-bedrock-nova"} <= names


def test_only_nova_installed_behaves_as_documented(site):
    out = gesso(site, "plugins", plugins="gesso-bedrock-nova")
    assert [row["name"] for row in json.loads(out.stdout)] == ["gesso-bedrock-nova"]
    titan = gesso(
        site,
        "generate",
        "x",
        "-m",
        "bedrock/amazon.titan-image-generator-v2:0",
        "--emulator",
        plugins="gesso-bedrock-nova",
    )
    assert titan.returncode == 1
    assert "pip install gesso-bedrock-titan" in titan.stderr


def test_an_installed_plugin_is_registered_with_pluggy_as_a_registration_object(site):
    """What pluggy holds for an entry point is gesso's Registration of the module the entry point names, its stage
    hooks guarded and reached by their family's calls only."""
    script = (
        "import json; from gesso import plugins\n"
        "manager = plugins.get_plugin_manager()\n"
        "acme = manager.get_plugin('gesso-acme')\n"
        "model = plugins.get_registry().get('acme.painter-v1')\n"
        "nova = plugins.get_registry().get('amazon.nova-canvas-v1:0')\n"
        "reached = lambda m: sorted(manager.get_name(i.plugin) for i in plugins.route(m).gesso_transform_request.get_hookimpls())\n"
        "print(json.dumps({'kind': type(acme).__name__, 'module': acme.plugin.__name__,\n"
        "                  'acme': reached(model), 'nova': reached(nova)}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(PYTHONPATH=str(site), GESSO_PLUGINS="gesso-acme,gesso-bedrock-nova")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert seen["kind"] == "Registration" and seen["module"].startswith("gesso_acme")
    assert seen["acme"] == ["gesso-acme"] and seen["nova"] == ["gesso-bedrock-nova"]
