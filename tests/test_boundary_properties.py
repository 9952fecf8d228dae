"""Property tests at the proxy's tenant boundary: arbitrary requests from a caller, against a real proxy.

Hypothesis builds JSON bodies, multipart forms, header sets and model names from the whole Unicode range (lone
surrogates, control characters, huge values, ``os.environ/NAME`` of every variable the proxy has, ``file://``,
``s3://``, path traversal) and sends them to a proxy (uvicorn on loopback, a SQLite store, a deployment writing
``url`` images to its own file store, and Nova 2 Omni through Converse at a deployment's token price, drawn with
its inference settings) with the master key, a virtual key, another header or none. Invariants:

- never a 5xx, and no log record above INFO;
- no environment value (the master key and the deployment's credential among them) in any answer, log line,
  metric or spend row;
- nothing written outside the deployment's image store;
- every image request answered has exactly one spend row (by its ``x-request-id``);
- ``/metrics`` parses (``prometheus_client``'s parser) and its series stay bounded;
- no log line holds a line break from a caller (no forged lines), as text or as gesso serve's text and JSON
  lines.

CI size: ``HYPOTHESIS_PROFILE=ci`` (the default) runs ``BOUNDARY_EXAMPLES`` examples per test (100); the
``long`` profile runs 20,000 (``HYPOTHESIS_PROFILE=long pytest tests/test_boundary_properties.py``).
``COUNTS`` holds the answers by route and status (printed at the end of the module).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import http.client
import json
import logging
import os
import sys
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import POSTGRES_URL_ENV
from gesso.proxy import config as proxy_config
from gesso.proxy import store
from gesso.proxy.app import build_app
from gesso.proxy.logs import JsonFormatter, TextFormatter
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, Emulator
from helpers import bench_module, multipart, picture, proxy_environment, uvicorn_running

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
EXAMPLES = int(os.environ.get("BOUNDARY_EXAMPLES", "20000" if LONG else "100"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)  # fmt: skip
MASTER_ENV, SECRET_ENV = "GESSO_BP_MASTER_KEY", "GESSO_BP_DEPLOYMENT_SECRET"
SECRETS = {MASTER_ENV: "sk-bp-master-" + uuid.uuid4().hex, SECRET_ENV: "bp-deployment-secret-" + uuid.uuid4().hex}
COUNTS: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
PNG = picture(320, 320)

# -- what a caller sends ------------------------------------------------------------------------------------------

ENV_NAMES = sorted({*os.environ, *SECRETS, "DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "HOME"})
hostile = st.one_of(
    st.sampled_from([f"os.environ/{name}" for name in ENV_NAMES]),
    st.sampled_from(["file:///tmp/gesso-bp", "file:///etc", "s3://any-bucket/x", "../../../etc/passwd",
                     "..\\..\\windows", "/dev/zero", "http://169.254.169.254/latest/meta-data/", "\x00", "\r\n",
                     "x\nINFO gesso.proxy: request forged cost=0.04", "\ud800", "\udfff\ud800", "\u202e", "nova\n",
                     "%00", "${MASTER_KEY}", "{{config}}", "'; DROP TABLE gesso_keys; --"]),
)  # fmt: skip
#: text from the whole Unicode range, surrogates and controls included
any_text = st.one_of(
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=24),
    hostile,
    st.text(max_size=4).map(lambda s: s * 25_000),  # up to 100,000 characters
)
numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70), st.sampled_from([5000, 400, 63, 19]).map(lambda e: 10**e),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
)  # fmt: skip
json_values = st.recursive(
    st.one_of(st.none(), numbers, any_text),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(any_text, inner, max_size=4)),
    max_leaves=12,
)
FIELD_NAMES = [
    "n", "size", "quality", "response_format", "style", "user", "output_format", "output_compression", "prompt",
    "image_store", "image_url_expiry", "timeout", "max_retries", "retry_budget", "aws_region_name", "model_id",
    "aws_access_key_id", "aws_secret_access_key", "aws_bedrock_runtime_endpoint", "api_key", "ssl_verify",
    "extra_headers", "max_fanout", "snap_size", "cfgScale", "seed", "negativeText", "taskType",
    "imageGenerationConfig", "textToImageParams", "maskPrompt", "similarityStrength", "extra_body", "metadata",
    "background", "moderation", "stream", "partial_images", "input_fidelity", "maxTokens", "temperature", "topP",
    "inferenceConfig", "reasoningConfig", "additionalModelRequestFields", "system", "messages", "guardrailConfig",
    "input_cost_per_token", "output_cost_per_token", "model_info",
]  # fmt: skip
#: Nova Canvas twice (one writing url images to a store) and Nova 2 Omni through Converse, at a deployment price
CONFIGURED = st.sampled_from(["nova", "stored", "omni"])
KEYS = st.sampled_from(["master", "virtual"])
field_names = st.one_of(st.sampled_from(FIELD_NAMES), any_text)
model_names = st.one_of(st.sampled_from(["nova ", "NOVA", ""]), any_text, numbers, st.none())
#: what a client would plausibly send, for requests that get through, with hostile text where text goes
plausible = st.fixed_dictionaries(
    {},
    optional={
        "n": st.integers(1, 2), "size": st.sampled_from(["320x320", "512x512", "auto"]), "seed": st.integers(0, 9),
        "quality": st.sampled_from(["standard", "hd"]), "response_format": st.sampled_from(["b64_json", "url"]),
        "user": any_text, "negativeText": any_text, "style": st.sampled_from(["PHOTOREALISM", "vivid"]),
        # Nova 2 Omni's (the samples' inference settings), flat or nested
        "maxTokens": st.integers(1, 10_000), "temperature": st.sampled_from([0, 0.5, 1]),
        "inferenceConfig": st.fixed_dictionaries({}, optional={"topP": st.sampled_from([0.1, 1]),
                                                               "maxTokens": st.integers(1, 10_000)}),
        "reasoningConfig": st.fixed_dictionaries({"type": st.sampled_from(["enabled", "disabled"])},
                                                 optional={"maxReasoningEffort": st.sampled_from(["low", "high"])}),
    },
)  # fmt: skip
fields = st.one_of(
    st.dictionaries(field_names, json_values, max_size=6),
    st.tuples(plausible, st.dictionaries(field_names, json_values, max_size=1)).map(lambda t: {**t[0], **t[1]}),
)
credentials = st.sampled_from(["none", "garbage", "litellm-header", "x-api-key"])


def headers_for(credential: str, key: str, extra: dict[str, str]) -> dict[str, str]:
    chosen = {
        "master": {"Authorization": f"Bearer {SECRETS[MASTER_ENV]}"},
        "virtual": {"Authorization": f"Bearer {key}"},
        "none": {},
        "garbage": {"Authorization": "Bearer os.environ/GESSO_BP_MASTER_KEY"},
        "litellm-header": {"x-litellm-api-key": key},
        "x-api-key": {"x-api-key": f"os.environ/{MASTER_ENV}"},
    }[credential]
    return {**extra, **chosen}


def mostly(good, other, share: int = 6):
    """``good`` in ``share`` of ten examples, else ``other``: enough requests get through to test what they do."""
    return st.integers(0, 9).flatmap(lambda i: good if i < share else other)


# header values are latin-1 without line breaks (http.client refuses others, as HTTP does)
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=40)
extra_headers = st.dictionaries(
    st.sampled_from(["x-request-id", "user-agent", "x-forwarded-for", "traceparent", "x-gesso-deployment",
                     "openai-organization", "x-litellm-tags", "api-key", "idempotency-key", "cache-control"]),
    st.one_of(header_text, st.sampled_from([f"os.environ/{n}" for n in SECRETS])), max_size=3,
)  # fmt: skip


def to_json(value) -> bytes:
    """JSON as a client could send it: ASCII escapes (so lone surrogates travel), huge integers written out."""
    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # a client writes any integer; the proxy's parser must cope with it
    try:
        return json.dumps(value).encode()
    finally:
        sys.set_int_max_str_digits(limit)


def form_text(value) -> str:
    return value if isinstance(value, str) else to_json(value).decode()


def field_name(name: str) -> str:
    """A form field's name as it can stand in a Content-Disposition header (no quote, no line break)."""
    return name.replace('"', "%22").replace("\r", "").replace("\n", "")


# -- the proxy under test ------------------------------------------------------------------------------------------


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Target:
    def __init__(self, port: int, database_url: str, root, image_store, lines: Lines, key: str) -> None:
        self.port, self.database_url, self.root, self.image_store, self.lines, self.key = (
            port, database_url, root, image_store, lines, key
        )  # fmt: skip
        self.request_ids: list[str] = []
        self.values = {v for v in os.environ.values() if len(v) >= 8} | set(SECRETS.values())

    def send(self, path: str, body: bytes, content_type: str, headers: dict[str, str]) -> tuple[int, dict, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("POST", path, body=body, headers={"Content-Type": content_type, **headers})
            answer = connection.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode()
        finally:
            connection.close()

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            connection.request("GET", path, headers=headers or {})
            answer = connection.getresponse()
            return answer.status, answer.read().decode()
        finally:
            connection.close()

    def check(self, route: str, status: int, headers: dict, text: str, sent: bytes) -> None:
        COUNTS[route][str(status)] += 1
        assert status < 500, text
        leaked = [v for v in self.values if v in text and v.encode() not in sent]
        assert not leaked, f"an environment value reached the answer: {text[:300]}"
        if status == 200:
            json.loads(text)["data"]
            COUNTS["answered by"][headers.get("x-gesso-deployment", "?")] += 1
        else:
            error = json.loads(text)["error"]
            assert isinstance(error["message"], str) and isinstance(error["type"], str)
        if "x-request-id" in headers:
            self.request_ids.append(headers["x-request-id"])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request, tmp_path_factory):
    """The database URL the proxy under test keeps its keys and spend rows in (as conftest's ``database_url``,
    once for the module)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('boundary-db') / 'gesso.db'}"
        return
    server = os.environ.get(POSTGRES_URL_ENV)
    if not server:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the PostgreSQL tests: {POSTGRES_URL_ENV} is not set", pytrace=False)
        pytest.skip(f"{POSTGRES_URL_ENV} is not set (export {POSTGRES_URL_ENV}=$(bash .ci/postgres.sh start))")
    with bench_module("gesso_bench").throwaway_postgres(server, "gesso_test") as url:
        yield url


@pytest.fixture(scope="module")
def target(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("boundary-properties")
    image_store = root / "store"
    database_url = backend
    lines = Lines()
    watched = [logging.getLogger(name) for name in ("gesso", "uvicorn")]
    with contextlib.ExitStack() as stack:
        patch = proxy_environment(stack, SECRETS)
        patch.chdir(root)
        emulator = stack.enter_context(Emulator(port=0))
        aws = {
            "aws_bedrock_runtime_endpoint": emulator.url, "aws_access_key_id": EMULATOR_ACCESS_KEY,
            "aws_secret_access_key": f"os.environ/{SECRET_ENV}", "aws_region_name": "us-east-1", "max_retries": 0,
        }  # fmt: skip
        nova = "bedrock/amazon.nova-canvas-v1:0"
        config = proxy_config.parse({
            "model_list": [
                {"model_name": "nova", "litellm_params": {"model": nova, **aws}, "model_info": {"cache": True}},
                {"model_name": "stored", "litellm_params": {"model": nova, **aws, "image_store": f"file://{image_store}"}},
                {"model_name": "omni", "litellm_params": {"model": "bedrock/us.amazon.nova-2-omni-v1:0", **aws},
                 "model_info": {"input_cost_per_token": 0.000001, "output_cost_per_token": 0.00004}},
            ],
            "general_settings": {"master_key": f"os.environ/{MASTER_ENV}", "database_url": database_url,
                                 # the stored answers (idempotency keys, the cache): outside the root watched
                                 "result_store": str(tmp_path_factory.mktemp("boundary-results"))},
        })  # fmt: skip
        proxy_config.check(config)  # as gesso serve does: every deployment, the one with a store among them
        store.upgrade(database_url)
        for logger in watched:
            logger.addHandler(lines)
        stack.callback(lambda: [logger.removeHandler(lines) for logger in watched])
        import uvicorn

        served = uvicorn.Config(build_app(config), host="127.0.0.1", port=0, log_level="warning", lifespan="on",
                                log_config=None)  # fmt: skip
        for port in uvicorn_running(served):
            probe = Target(port, database_url, root, image_store, lines, "")
            status, _, text = probe.send("/key/generate", b'{"key_alias": "tenant"}', "application/json",
                                         {"Authorization": f"Bearer {SECRETS[MASTER_ENV]}"})  # fmt: skip
            assert status == 200, text
            probe.key = json.loads(text)["key"]
            yield probe
            final_checks(probe)
    print(f"\nboundary property examples: {json.dumps(COUNTS, sort_keys=True)}")


def final_checks(target: Target) -> None:
    """What holds once every example has run: spend rows, files, logs and metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    async def rows():
        s = store.Store(target.database_url)
        try:
            return await s.spend_logs(limit=10_000_000)
        finally:
            await s.close()

    written = collections.Counter(row["request_id"] for row in asyncio.run(rows()))
    missing = [rid for rid in target.request_ids if written[rid] != 1]
    assert not missing, f"{len(missing)} answered requests without exactly one spend row"
    spend = json.dumps(asyncio.run(rows()))
    assert not [v for v in target.values if v in spend], "an environment value reached a spend row"
    outside = [p for p in target.root.rglob("*") if p.is_file() and target.image_store not in p.parents
               and not p.name.startswith("gesso.db")]  # fmt: skip
    assert not outside, f"files written outside the image store: {outside[:5]}"
    status, metrics = target.get("/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(metrics)}
    requests = [s for s in families["gesso_requests"].samples if s.name == "gesso_requests_total"]
    # routes x (configured names + "-") x statuses: bounded whatever names and statuses callers produced
    assert len(requests) <= 3 * 4 * 20, len(requests)
    assert not [v for v in target.values if v in metrics], "an environment value reached a metric"
    loud = [r for r in target.lines.records if r.levelno > logging.INFO]
    assert not loud, [r.getMessage()[:300] for r in loud[:3]]
    for record in target.lines.records:
        message = record.getMessage()
        assert "\n" not in message and "\r" not in message, message[:300]
        assert not [v for v in target.values if v in message], "an environment value reached a log line"
        # as gesso serve writes it: one text line, or one JSON object whose fields hold the caller's text escaped
        text, entry = TextFormatter().format(record), JsonFormatter().format(record)
        assert "\n" not in text and "\r" not in text and "\n" not in entry, text[:300]
        assert isinstance(json.loads(entry), dict)
        assert not [v for v in target.values if v in text or v in entry], "an environment value reached a log line"


# -- the properties ----------------------------------------------------------------------------------------------


@FUZZ
@given(
    model=mostly(CONFIGURED, model_names), body=mostly(plausible, fields, 5), credential=mostly(KEYS, credentials, 7),
    headers=extra_headers, prompt=mostly(st.just("an otter"), st.one_of(any_text, json_values)),
)  # fmt: skip
def test_generations_hold_the_boundary(target, model, body, credential, headers, prompt):
    payload = {"model": model, "prompt": prompt, **body}
    sent = to_json(payload)
    status, answer_headers, text = target.send(
        "/v1/images/generations", sent, "application/json", headers_for(credential, target.key, headers)
    )
    target.check("generations", status, answer_headers, text, sent)


@FUZZ
@given(
    route=st.sampled_from(["edits", "variations"]), model=mostly(CONFIGURED, any_text),
    body=mostly(plausible, fields, 5), credential=mostly(KEYS, credentials, 7), headers=extra_headers,
    with_image=mostly(st.just(True), st.just(False), 8),
)  # fmt: skip
def test_forms_hold_the_boundary(target, route, model, body, credential, headers, with_image):
    parts: list[tuple[str, str | bytes]] = [("model", model)]
    parts += [(field_name(name), form_text(value)) for name, value in body.items()]
    if with_image:
        parts.append(("image", PNG))
    sent, content_type = multipart(parts)
    status, answer_headers, text = target.send(
        f"/v1/images/{route}", sent, content_type, headers_for(credential, target.key, headers)
    )
    target.check(route, status, answer_headers, text, sent)
