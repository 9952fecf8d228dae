"""Every credential path, each against a real local service: the emulator checks SigV4 (and serves
HTTPS for Bedrock API keys), and moto's server plays STS for role assumption."""

from __future__ import annotations

import logging

import pytest

import gesso
from gesso.errors import AuthenticationError, InvalidRequestError
from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator

NOVA = "bedrock/amazon.nova-canvas-v1:0"
ROLE = "arn:aws:iam::123456789012:role/gesso-image-role"


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    ca_file, chain_file, key_file = folder / "ca.pem", folder / "chain.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    for blob in cert.cert_chain_pems:
        blob.write_to_path(str(chain_file), append=True)
    return str(ca_file), str(chain_file), str(key_file)


@pytest.fixture
def tls_emulator(tls_files):
    _, chain, key = tls_files
    with Emulator(port=0, api_keys={"bedrock-api-key-1"}, tls=(chain, key)) as emu:
        yield emu


def body(emulator) -> dict:
    return emulator.requests[-1].json()


def test_static_keys_and_session_token(emulator):
    gesso.image_generation(
        NOVA, "x", aws_bedrock_runtime_endpoint=emulator.url, aws_region_name="us-west-2",
        aws_access_key_id=EMULATOR_ACCESS_KEY, aws_secret_access_key=EMULATOR_SECRET_KEY, aws_session_token="tok",
    )  # fmt: skip
    signed = emulator.requests[-1]
    assert (signed.signed_by.access_key_id, signed.signed_by.region) == (EMULATOR_ACCESS_KEY, "us-west-2")
    assert signed.headers["X-Amz-Security-Token"] == "tok"


def test_wrong_secret_is_an_authentication_error(emulator):
    with pytest.raises(AuthenticationError, match="InvalidSignatureException"):
        gesso.image_generation(
            NOVA, "x", aws_bedrock_runtime_endpoint=emulator.url, aws_region_name="us-east-1",
            aws_access_key_id=EMULATOR_ACCESS_KEY, aws_secret_access_key="not-the-secret",
        )  # fmt: skip


def test_profile_from_shared_files_gives_keys_and_region(emulator, tmp_path, monkeypatch):
    credentials = tmp_path / "credentials"
    config = tmp_path / "config"
    credentials.write_text(
        f"[imagery]\naws_access_key_id = {EMULATOR_ACCESS_KEY}\naws_secret_access_key = {EMULATOR_SECRET_KEY}\n"
    )
    config.write_text("[profile imagery]\nregion = eu-west-2\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(credentials))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    gesso.image_generation(NOVA, "x", aws_profile_name="imagery", aws_bedrock_runtime_endpoint=emulator.url)
    assert emulator.requests[-1].signed_by.region == "eu-west-2"
    assert emulator.requests[-1].signed_by.access_key_id == EMULATOR_ACCESS_KEY


def test_default_chain_reads_the_environment(emulator, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", EMULATOR_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", EMULATOR_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    gesso.image_generation(NOVA, "x", aws_bedrock_runtime_endpoint=emulator.url)
    assert emulator.requests[-1].signed_by.region == "ap-northeast-1"


def test_os_environ_values(emulator, monkeypatch):
    monkeypatch.setenv("IMAGES_KEY", EMULATOR_ACCESS_KEY)
    monkeypatch.setenv("IMAGES_SECRET", EMULATOR_SECRET_KEY)
    gesso.image_generation(
        NOVA, "x", aws_access_key_id="os.environ/IMAGES_KEY", aws_secret_access_key="os.environ/IMAGES_SECRET",
        aws_region_name="us-east-1", aws_bedrock_runtime_endpoint=emulator.url,
    )  # fmt: skip
    assert emulator.requests[-1].signed_by.access_key_id == EMULATOR_ACCESS_KEY
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "x", aws_secret_access_key="os.environ/NOT_SET_ANYWHERE", aws_access_key_id="k")
    assert str(info.value.violations[0]) == (
        "aws_secret_access_key: environment variable NOT_SET_ANYWHERE (from 'os.environ/NOT_SET_ANYWHERE') is not set"
    )


@pytest.mark.parametrize(
    ("kwargs", "env", "region"),
    [
        ({"aws_region_name": "us-west-2"}, {"AWS_REGION": "eu-central-1"}, "us-west-2"),
        (
            {"model_id": "arn:aws:bedrock:eu-west-1:000000000000:application-inference-profile/a0a0a0a0a0a0"},
            {"AWS_REGION": "eu-central-1"},
            "eu-west-1",
        ),
        (
            {
                "aws_region_name": "us-west-2",
                "model_id": "arn:aws:bedrock:eu-west-1:000000000000:application-inference-profile/a0a0a0a0a0a0",
            },
            {},
            "us-west-2",
        ),
        ({}, {"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "eu-north-1"}, "eu-central-1"),
        ({}, {"AWS_DEFAULT_REGION": "eu-north-1"}, "eu-north-1"),
    ],
)
def test_region_order(aws, emulator, monkeypatch, kwargs, env, region):
    del aws["aws_region_name"]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    emulator.application_profiles["a0a0a0a0a0a0"] = "amazon.nova-canvas-v1:0"
    gesso.image_generation(NOVA, "x", **kwargs, **aws)
    assert emulator.requests[-1].signed_by.region == region


def test_the_seed_inference_profile_example_signs_for_its_region_and_posts_the_encoded_arn(aws, emulator):
    del aws["aws_region_name"]
    arn = "arn:aws:bedrock:eu-west-1:000000000000:application-inference-profile/a0a0a0a0a0a0"
    emulator.application_profiles[arn] = "amazon.nova-canvas-v1:0"
    gesso.image_generation(model="bedrock/amazon.nova-canvas-v1:0", model_id=arn, prompt="A cute baby sea otter", **aws)
    request = emulator.requests[-1]
    assert request.signed_by.region == "eu-west-1"
    assert (
        request.path
        == "/model/arn%3Aaws%3Abedrock%3Aeu-west-1%3A000000000000%3Aapplication-inference-profile%2Fa0a0a0a0a0a0/invoke"
    )


def test_bare_arn_with_base_model(aws, emulator):
    arn = "arn:aws:bedrock:us-east-1:000000000000:application-inference-profile/b1b1b1b1b1b1"
    emulator.application_profiles[arn] = "amazon.nova-canvas-v1:0"
    resp = gesso.image_generation(f"bedrock/{arn}", "x", base_model="amazon.nova-canvas-v1:0", **aws)
    assert resp.model == "amazon.nova-canvas-v1:0" and emulator.requests[-1].model_id == arn


def test_assume_role_through_sts(sts, open_emulator):
    resp = gesso.image_generation(
        NOVA, "x", aws_role_name=ROLE, aws_session_name="gesso-test", aws_external_id="ext-1",
        aws_access_key_id="AKIDSOURCE", aws_secret_access_key="source-secret", aws_sts_endpoint=sts,
        aws_region_name="us-east-1", aws_bedrock_runtime_endpoint=open_emulator.url,
    )  # fmt: skip
    assert len(resp.data) == 1
    signed = open_emulator.requests[-1]
    assert signed.signed_by.access_key_id.startswith("ASIA"), "signed with the role's temporary keys"
    assert signed.signed_by.access_key_id != "AKIDSOURCE"
    assert signed.headers["X-Amz-Security-Token"]


def test_assumed_credentials_are_reused_until_near_expiry_then_refreshed(sts, open_emulator, monkeypatch):
    kwargs = dict(
        aws_role_name=ROLE, aws_access_key_id="AKIDSOURCE", aws_secret_access_key="s", aws_sts_endpoint=sts,
        aws_region_name="us-east-1", aws_bedrock_runtime_endpoint=open_emulator.url,
    )  # fmt: skip
    gesso.image_generation(NOVA, "x", **kwargs)
    gesso.image_generation(NOVA, "y", **kwargs)
    first, second = (r.signed_by.access_key_id for r in list(open_emulator.requests)[-2:])
    assert first == second, "one STS call serves calls until the credentials near expiry"

    from botocore.credentials import RefreshableCredentials

    # moto issues credentials valid for an hour; widen botocore's refresh window past that, so the
    # next call finds them near expiry and must refresh them before signing
    monkeypatch.setattr(RefreshableCredentials, "_advisory_refresh_timeout", 2 * 3600)
    monkeypatch.setattr(RefreshableCredentials, "_mandatory_refresh_timeout", 2 * 3600)
    gesso.image_generation(NOVA, "z", **kwargs)
    assert open_emulator.requests[-1].signed_by.access_key_id != first


def test_web_identity_through_sts(sts, open_emulator):
    gesso.image_generation(
        NOVA, "x", aws_web_identity_token="eyJhbGciOi.fake.token", aws_role_name=ROLE, aws_sts_endpoint=sts,
        aws_region_name="us-east-1", aws_bedrock_runtime_endpoint=open_emulator.url,
    )  # fmt: skip
    assert open_emulator.requests[-1].signed_by.access_key_id.startswith("ASIA")


def test_web_identity_needs_a_role():
    with pytest.raises(InvalidRequestError, match="aws_web_identity_token: needs aws_role_name"):
        gesso.image_generation(NOVA, "x", aws_web_identity_token="tok")


def test_sts_failure_is_an_authentication_error(open_emulator):
    with pytest.raises(AuthenticationError, match=f"AssumeRole for role {ROLE} failed"):
        gesso.image_generation(
            NOVA, "x", aws_role_name=ROLE, aws_access_key_id="a", aws_secret_access_key="b",
            aws_sts_endpoint="http://127.0.0.1:9", aws_region_name="us-east-1",
            aws_bedrock_runtime_endpoint=open_emulator.url,
        )  # fmt: skip


def test_bedrock_api_key_uses_bearer_auth(tls_emulator, tls_files):
    ca, _, _ = tls_files
    common = dict(aws_bedrock_runtime_endpoint=tls_emulator.url, aws_region_name="us-east-1", ssl_verify=ca)
    gesso.image_generation(NOVA, "x", api_key="bedrock-api-key-1", **common)
    recorded = tls_emulator.requests[-1]
    assert recorded.headers["Authorization"] == "Bearer bedrock-api-key-1"
    assert recorded.signed_by is None
    with pytest.raises(AuthenticationError, match="UnrecognizedClientException"):
        gesso.image_generation(NOVA, "x", api_key="wrong-key", **common)


def test_bearer_token_from_the_environment(tls_emulator, tls_files, monkeypatch):
    ca, _, _ = tls_files
    monkeypatch.setenv("AWS_BEARER_TOKEN_BEDROCK", "bedrock-api-key-1")
    common = dict(aws_bedrock_runtime_endpoint=tls_emulator.url, aws_region_name="us-east-1", ssl_verify=ca)
    gesso.image_generation(NOVA, "x", **common)
    assert tls_emulator.requests[-1].headers["Authorization"] == "Bearer bedrock-api-key-1"
    # explicit SigV4 credentials win over the environment's API key
    gesso.image_generation(NOVA, "x", aws_access_key_id="AKIDX", aws_secret_access_key="s", **common)
    assert tls_emulator.requests[-1].headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDX/")


def test_tls_verification_is_on_by_default(tls_emulator):
    from gesso.errors import ProviderError

    with pytest.raises(ProviderError, match="SSL|certificate"):
        gesso.image_generation(
            NOVA, "x", api_key="bedrock-api-key-1", aws_bedrock_runtime_endpoint=tls_emulator.url,
            aws_region_name="us-east-1", max_retries=0,
        )  # fmt: skip


def test_secrets_stay_out_of_gesso_logs_and_errors(sts, open_emulator, caplog):
    secret, token, key = "SOURCE-SECRET-999", "WEB-IDENTITY-777", "API-KEY-555"
    with caplog.at_level(logging.DEBUG, logger="gesso"):
        gesso.image_generation(
            NOVA, "x", aws_role_name=ROLE, aws_access_key_id="AKIDSRC", aws_secret_access_key=secret,
            aws_external_id="EXTERNAL-333", aws_sts_endpoint=sts, aws_region_name="us-east-1",
            aws_bedrock_runtime_endpoint=open_emulator.url, user="alice",
        )  # fmt: skip
        for kwargs in (
            {"aws_web_identity_token": token, "aws_role_name": ROLE, "aws_sts_endpoint": "http://127.0.0.1:9"},
            {"api_key": key},
        ):
            with pytest.raises(gesso.errors.GessoError) as info:
                gesso.image_generation(
                    NOVA,
                    "x",
                    aws_region_name="us-east-1",
                    aws_bedrock_runtime_endpoint=open_emulator.url,
                    max_retries=0,
                    **kwargs,
                )
            for text in (str(info.value), repr(info.value), repr(info.value.__cause__)):
                assert not {secret, token, key} & set(text.split())
                assert all(s not in text for s in (secret, token, key))
    assert "alice" in caplog.text, "the debug log did record the call"
    for s in (secret, token, key, "EXTERNAL-333"):
        assert s not in caplog.text
