"""Shared fixtures: a fresh plugin manager per test, no ambient AWS configuration, the emulator
on loopback with signature verification on (so every call proves boto3 really signed it), and a fresh database
on SQLite and on PostgreSQL for the proxy's store."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from gesso import plugins
from gesso_bedrock import transport
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

NOVA = "bedrock/amazon.nova-canvas-v1:0"

_AWS_ENV = (
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
    "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_BEARER_TOKEN_BEDROCK", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_BEDROCK_RUNTIME",
)  # fmt: skip


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # optional: .ci/pluggy.sh runs without pytest-xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """``-n auto`` hands tests out by work stealing instead of xdist's default fixed share: the suite's tests run
    from milliseconds to 20 s, and a worker that runs out of its share takes from the other's queue (a run of the
    suite on 2 cores: 308 s, against 327 s with the fixed share)."""
    if config.getvalue("dist") != "load":  # a --dist the command line chose
        return None
    from xdist.scheduler import WorkStealingScheduling

    return WorkStealingScheduling(config, log)


@pytest.fixture(autouse=True)
def isolated(monkeypatch, tmp_path):
    monkeypatch.delenv("GESSO_PLUGINS", raising=False)
    for name in _AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    plugins.reset()
    transport.clear_clients()
    yield
    plugins.reset()
    transport.clear_clients()


@pytest.fixture
def emulator():
    with Emulator(port=0, credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY}) as emu:
        yield emu


@pytest.fixture
def aws(emulator) -> dict:
    """The kwargs that point a gesso call at the emulator."""
    return {
        "aws_bedrock_runtime_endpoint": emulator.url,
        "aws_access_key_id": EMULATOR_ACCESS_KEY,
        "aws_secret_access_key": EMULATOR_SECRET_KEY,
        "aws_region_name": "us-east-1",
    }


@pytest.fixture
def bedrock(emulator):
    """A plain boto3 bedrock-runtime client on the emulator, with botocore's own retries off."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "bedrock-runtime",
        region_name="us-east-1",
        endpoint_url=emulator.url,
        aws_access_key_id=EMULATOR_ACCESS_KEY,
        aws_secret_access_key=EMULATOR_SECRET_KEY,
        config=Config(retries={"total_max_attempts": 1}),
    )


POSTGRES_URL_ENV = "GESSO_TEST_POSTGRES_URL"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str]:
    """A URL of an empty database, once per backend: ``sqlite:///<tmp_path>/gesso.db``, and a fresh database
    created for this test on the PostgreSQL server at $GESSO_TEST_POSTGRES_URL
    (``postgresql://user@host:port/<unique name>``, dropped afterwards). ``.ci/postgres.sh start`` prints such a
    server's URL. Without it the PostgreSQL case is skipped, except under CI=true, where it fails."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'gesso.db'}"
        return
    server = os.environ.get(POSTGRES_URL_ENV)
    if not server:
        reason = (
            f"{POSTGRES_URL_ENV} is not set (start a server: export {POSTGRES_URL_ENV}=$(bash .ci/postgres.sh start))"
        )
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the PostgreSQL tests: {reason}", pytrace=False)
        pytest.skip(reason)
    from helpers import bench_module

    with bench_module("gesso_bench").throwaway_postgres(server, "gesso_test") as url:
        yield url


@pytest.fixture(scope="module")
def sts():
    """moto's STS on loopback: it hands an assumed role a fresh secret key and session token."""
    from helpers import moto_server

    yield from moto_server()


@pytest.fixture
def open_emulator():
    """An emulator that accepts any well-formed signature (STS issues keys it cannot know)."""
    with Emulator(port=0) as emu:
        yield emu
