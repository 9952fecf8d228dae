"""Schema-driven fuzz of the proxy (schemathesis) from its own ``/openapi.json``, served by a real uvicorn on
loopback, with deployments on an in-process emulator.

Each operation of the document is fuzzed (schemathesis's examples, coverage and fuzzing phases; valid and
invalid data) in three set-ups: no keys (no master key, no database), the master key (with a SQLite store), and
a virtual key (same store; a key with a model list, a budget and an rpm limit). Checks: no 5xx
(``not_a_server_error``), every status and body is one the document gives for the operation
(``status_code_conformance``, ``response_schema_conformance``, ``content_type_conformance``,
``response_headers_conformance``), and no request hangs (each has a ``TIMEOUT`` seconds deadline).

CI size: ``GESSO_FUZZ_EXAMPLES`` examples per operation in the fuzzing phase (default 8; the coverage phase
adds its own fixed cases); e.g. ``GESSO_FUZZ_EXAMPLES=500 pytest tests/test_proxy_fuzz.py`` for a longer run.
``COUNTS`` holds the requests sent per set-up and their statuses (printed at the end, for RELIABILITY.md).
"""

from __future__ import annotations

import collections
import json
import os

import pytest
import requests
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from test_proxy import deployment, serving

from gesso.proxy import config as proxy_config
from gesso.proxy import store
from gesso.proxy.openapi import spec
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

EXAMPLES = int(os.environ.get("GESSO_FUZZ_EXAMPLES", "8"))
#: seconds any one request may take before the fuzz counts it as hung
TIMEOUT = 10.0
MASTER_KEY = "sk-fuzz-master-key-0123456789"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]
SETUPS = ("no keys", "master key", "virtual key")

#: set-up -> status -> requests, for RELIABILITY.md
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module")
def emu():
    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emulator:
        yield emulator


@pytest.fixture(autouse=True)
def no_http_proxy(monkeypatch):
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module", params=SETUPS)
def target(request, emu, tmp_path_factory):
    """The proxy of one set-up, and the headers each request carries."""
    models = [deployment("nova", emu, "nova-a", max_retries=0), deployment("titan", emu, "titan-a", max_retries=0,
              model="bedrock/amazon.titan-image-generator-v2:0")]  # fmt: skip
    assert [m["model_name"] for m in models] == MODEL_NAMES
    general = {}
    if request.param != "no keys":
        url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'gesso.db'}"
        store.upgrade(url)
        general = {"master_key": MASTER_KEY, "database_url": url}
    config = proxy_config.parse({"model_list": models, "general_settings": general})
    with serving(config) as served:
        headers = {}
        if request.param == "master key":
            headers = {"Authorization": f"Bearer {MASTER_KEY}"}
        elif request.param == "virtual key":
            made = requests.post(
                f"{served.url}/key/generate", headers={"Authorization": f"Bearer {MASTER_KEY}"}, timeout=TIMEOUT,
                json={"key_alias": "fuzzer", "models": ["nova"], "max_budget": 0.5, "rpm_limit": 120},
            )  # fmt: skip
            assert made.status_code == 200, made.text
            headers = {"Authorization": f"Bearer {made.json()['key']}"}
        yield request.param, served, headers
    print(f"\nproxy fuzz requests ({request.param}): {json.dumps(COUNTS[request.param], sort_keys=True)}")


MODEL_NAMES = ["nova", "titan"]
#: the document the proxy serves at /openapi.json (``test_the_document_fuzzed_is_the_one_served`` holds them
#: equal); built here, at collection, since schemathesis's lazy loader (``from_fixture``) does not run on pytest 9
schema = schemathesis.openapi.from_dict(
    spec(MODEL_NAMES),
    config=SchemathesisConfig.from_dict(
        {
            "generation": {"max-examples": EXAMPLES, "mode": "all"},
            "request-timeout": TIMEOUT,
            "suppress-health-check": ["all"],
            "seed": 17,
        }
    ),
)


def test_the_document_fuzzed_is_the_one_served(target):
    _, served, headers = target
    served_document = requests.get(f"{served.url}/openapi.json", headers=headers, timeout=TIMEOUT).json()
    assert served_document == json.loads(json.dumps(schema.raw_schema))


@schema.parametrize()
def test_the_proxy_keeps_to_its_openapi_document(case, target):
    name, served, headers = target
    response = case.call(base_url=served.url, headers=headers, timeout=TIMEOUT)
    COUNTS[name][str(response.status_code)] += 1
    checks = CHECKS
    managed = ("/key/", "/spend/", "/team/", "/user/", "/customer/")
    if response.status_code == 501 and name == "no keys" and case.operation.path.startswith(managed):
        # the key and spend API of a proxy without a database: the one 5xx the document gives, on purpose
        assert response.json()["error"]["message"].startswith("This proxy has no database")
        checks = [check for check in CHECKS if check is not not_a_server_error]
    case.validate_response(response, checks=checks, headers=headers)
