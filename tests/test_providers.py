"""A provider-neutral core: a made-up provider that is not Bedrock (tests/fixtures/dists/gesso-acmecloud:
its own model strings, options, HTTP transport, emulator and CLI command) works through every entry point,
and the generic modules of gesso name no Bedrock concept."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import gesso
from gesso import plugins
from gesso.errors import InvalidRequestError, PluginConflictError, UnknownModelError
from gesso.testing import FamilyContract

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = Path(__file__).parent / "fixtures" / "dists" / "gesso-acmecloud"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("acme-site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--no-build-isolation",
         "--target", str(target), str(FIXTURE)],
        check=True,
    )  # fmt: skip
    return target


@pytest.fixture
def acme(acme_site, monkeypatch):
    """gesso with Acme Cloud installed (on sys.path), the registry rebuilt."""
    monkeypatch.syspath_prepend(str(acme_site))
    plugins.reset()
    provider = plugins.get_registry().providers["acme"]
    model = plugins.get_registry().get("painter-v1", provider="acme")
    with provider.emulate(model, {}) as options:
        yield options
    plugins.reset()


def cli(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_") and k != "GESSO_PLUGINS"}
    env["PYTHONPATH"] = str(site)
    return subprocess.run([sys.executable, "-m", "gesso", *args], capture_output=True, text=True, env=env, timeout=120)


def test_the_sdk_calls_another_provider_by_its_own_model_string_and_options(acme):
    response = gesso.image_generation("acme/painter-v1", "a red fox", size="64x32", n=2, **acme)
    assert len(response.data) == 2 and response.cost == pytest.approx(0.02)
    assert response.model == "painter-v1"
    from gesso.imaging import inspect

    info = inspect(__import__("base64").b64decode(response.data[0].b64_json))
    assert (info.width, info.height) == (64, 32)


def test_another_providers_options_are_checked_before_sending(acme):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation("acme/painter-v1", "a fox", acme_endpoint="ftp://nowhere")
    assert {v.path for v in info.value.violations} == {"acme_endpoint", "acme_token"}
    with pytest.raises(InvalidRequestError, match="acme_url: is not a gesso parameter: use acme_endpoint"):
        gesso.image_generation("acme/painter-v1", "a fox", acme_url="http://x", **acme)
    with pytest.raises(InvalidRequestError, match="quality: Acme Cloud Painter has no quality setting"):
        gesso.image_generation("acme/painter-v1", "a fox", quality="hd", **acme)


def test_models_of_two_providers_coexist_and_bedrock_strings_still_resolve(acme, aws):
    assert set(plugins.get_registry().providers) >= {"acme", "bedrock"}
    assert gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "otter", **aws).data
    with pytest.raises(UnknownModelError, match="is not provided by any installed gesso plugin"):
        gesso.image_generation("acme/painter-v9", "a fox", **acme)


def test_the_async_entry_point_works_for_another_provider(acme):
    import asyncio

    response = asyncio.run(gesso.aimage_generation("acme/painter-v1", "a fox", **acme))
    assert len(response.data) == 1


def test_the_cli_generates_lists_and_runs_a_providers_command(acme_site, tmp_path):
    out = cli(
        acme_site,
        "generate",
        "a red fox",
        "-m",
        "acme/painter-v1",
        "--size",
        "32x32",
        "--emulator",
        "-o",
        str(tmp_path),
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == [
        "cost: $0.0100 (1 image, painter-v1)",
        "(emulated: no Acme Cloud call was made)",
    ]
    assert len(list(tmp_path.glob("*.png"))) == 1
    listed = {row["name"]: row for row in json.loads(cli(acme_site, "plugins").stdout)}
    assert listed["gesso-acmecloud"]["models"] == ["painter-v1"] and listed["gesso-acmecloud"]["error"] is None
    everything = [row["name"] for row in json.loads(cli(acme_site, "plugins", "--all").stdout)]
    assert "acmecloud" in everything and "gesso.bedrock" in everything
    models = cli(acme_site, "models").stdout.splitlines()
    assert any(line.startswith("painter-v1\tgesso-acmecloud") for line in models)
    assert cli(acme_site, "acme-status").stdout.strip() == "Acme Cloud models: painter-v1"
    bad = cli(acme_site, "generate", "x", "-m", "acme/painter-v1", "--acme-endpoint", "nowhere")
    assert bad.returncode == 1 and "acme_endpoint: must be the Acme Cloud API URL" in bad.stderr


class TestAcmeCloudContract(FamilyContract):
    """The family contract, run on the other provider's emulator."""

    distribution = "gesso-acmecloud"
    examples = [("acme/painter-v1", "a fox", {}), ("acme/painter-v1", "a fox", {"width": 32, "height": 16})]

    @pytest.fixture(autouse=True)
    def _installed(self, acme_site, monkeypatch):
        monkeypatch.syspath_prepend(str(acme_site))
        plugins.reset()


def test_two_plugins_claiming_one_family_is_a_conflict():
    class Twin:
        @gesso.hookimpl
        def gesso_register_models(self):
            return [gesso.Model(id="twin.other-v1", family="amazon.nova-canvas")]

    plugins.register_plugin(Twin(), name="gesso-twin")
    with pytest.raises(
        PluginConflictError, match="family amazon.nova-canvas: claimed by gesso-bedrock-nova, gesso-twin"
    ):
        plugins.get_registry()


# -- the generic core knows no Bedrock ---------------------------------------------------------------------

GENERIC = ["__init__.py", "__main__.py", "_fastschema.py", "aio.py", "api.py", "boundary.py", "cli.py", "errors.py", "family.py", "hookspecs.py",
           "imaging.py", "inputs.py", "operations.py", "options.py", "output.py", "params.py", "plugins.py", "provider.py",
           "redact.py", "registry.py", "sizes.py", "store.py", "telemetry.py", "testing.py", "types.py",
           "proxy/__init__.py", "proxy/admin.py", "proxy/app.py", "proxy/config.py", "proxy/guard.py", "proxy/http.py", "proxy/keys.py",
           "proxy/lifecycle.py", "proxy/logs.py", "proxy/metrics.py", "proxy/openapi.py", "proxy/probes.py", "proxy/router.py", "proxy/serve.py", "proxy/store.py", "proxy/supervisor.py", "proxy/workers.py",
           "proxy/migrations/__init__.py", "proxy/migrations/env.py", "proxy/migrations/versions/__init__.py",
           "proxy/migrations/versions/0001_keys_budgets_spend.py", "proxy/migrations/versions/0003_budget_leases.py", "proxy/ledger.py", "proxy/migrations/versions/0002_key_blocked.py",
           "proxy/migrations/versions/0004_teams_users_customers.py", "proxy/migrations/versions/0005_admin_ui.py", "proxy/migrations/versions/0006_idempotency.py", "cache.py", "pricing.py", "proxy/idempotency.py", "proxy/cached.py", "proxy/directory.py", "proxy/governance.py", "proxy/ui/__init__.py",
           "bulk/__init__.py", "bulk/lines.py", "bulk/manifest.py", "bulk/output.py", "bulk/pricing.py",
           "bulk/progress.py", "bulk/result.py", "bulk/run.py"]  # fmt: skip
FORBIDDEN = re.compile(r"(?i)\b(aws|bedrock|boto3?|botocore|arn:|sigv4|inference[ -]profile|amazon)\b")


@pytest.mark.parametrize("module", GENERIC)
def test_the_generic_modules_name_no_bedrock_concept(module):
    text = (ROOT / "core" / "src" / "gesso" / module).read_text()
    found = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if FORBIDDEN.search(line)]
    assert not found, f"core/src/gesso/{module} names a provider's concept: {found[:3]}"


def test_every_core_module_is_checked():
    core = ROOT / "core" / "src" / "gesso"
    modules = {str(p.relative_to(core)) for p in core.rglob("*.py")}
    assert modules == set(GENERIC), "a new core module must be added to the generic-modules check"


def test_the_core_distribution_does_not_depend_on_boto3():
    import tomllib

    data = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())
    names = [re.split(r"[\s;<>=!~\[(]", r, maxsplit=1)[0].lower() for r in data["project"]["dependencies"]]
    assert not {"boto3", "botocore", "aiobotocore"} & set(names)


# -- typed prices ----------------------------------------------------------------------------------------


def test_a_price_table_missing_a_tier_is_an_error_at_registration():
    from gesso.types import PriceTable

    with pytest.raises(ValueError, match=r"missing prices \['premium_2048'\]"):
        PriceTable({"quality": ("standard", "premium"), "tier": ("1024", "2048")},
                   {"standard_1024": 0.04, "premium_1024": 0.06, "standard_2048": 0.06})  # fmt: skip

    class Unpriced:
        @gesso.hookimpl
        def gesso_register_models(self):
            table = PriceTable({"tier": ("small", "large")}, {"small": 0.01})
            return [gesso.Model(id="test.unpriced-v1", family="test.unpriced", prices=table)]

    plugins.register_plugin(Unpriced(), name="gesso-unpriced")
    row = next(p for p in plugins.list_plugins() if p["name"] == "gesso-unpriced")
    assert row["error"].startswith("gesso_register_models failed: ValueError: price table: missing prices ['large']")
    assert plugins.get_registry().get("test.unpriced-v1") is None


def test_a_price_table_prices_every_tier_and_refuses_an_unknown_one():
    from gesso.types import PriceTable

    table = PriceTable({"quality": ("standard", "premium")}, {"standard": 0.01, "premium": 0.02})
    assert table.price(quality="premium") == 0.02 and dict(table) == {"standard": 0.01, "premium": 0.02}
    with pytest.raises(ValueError, match="quality must be one of"):
        table.price(quality="ultra")
    with pytest.raises(ValueError, match="non-negative"):
        PriceTable({"q": ("a",)}, {"a": -1})
