"""The Bedrock transport: botocore errors mapped once to gesso's hierarchy (over real HTTP), client
caching and configuration, and secrets kept out of messages and reprs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import gesso
from gesso import errors
from gesso.types import GeneratedImage, Model, ParsedResponse, PreparedRequest
from gesso_bedrock import transport
from gesso_bedrock.emulator import EmulatorError

FAULTY = "bedrock/test.faulty-v1"


class Faulty:
    """A model whose emulation answers with the Bedrock error named in the prompt: 'status|Code|message'."""

    @staticmethod
    def emulate(call):
        status, code, message = call.body["prompt"].split("|", 2)
        raise EmulatorError(int(status), code, message)

    @gesso.hookimpl
    def gesso_register_models(self):
        return [Model(id="test.faulty-v1", family="test.faulty", emulator=self.emulate)]

    @gesso.hookimpl
    def gesso_transform_request(self, request):
        return PreparedRequest(bodies=[{"prompt": request.prompt}]) if request.model.family == "test.faulty" else None

    @gesso.hookimpl
    def gesso_parse_response(self, request):
        return ParsedResponse(images=[GeneratedImage(b64="")]) if request.model.family == "test.faulty" else None


@pytest.fixture
def faulty():
    gesso.register_plugin(Faulty(), name="faulty")


@pytest.mark.parametrize(
    ("wire", "cls", "status"),
    [
        (
            "400|ValidationException|Malformed input request: #: required key [x] not found",
            errors.InvalidRequestError,
            400,
        ),
        (
            "400|ValidationException|This request has been blocked by our content filters. Please adjust your text prompt to submit a new request.",
            errors.ContentFilteredError,
            400,
        ),
        (
            "403|AccessDeniedException|You don't have access to the model with the specified model ID.",
            errors.PermissionDeniedError,
            403,
        ),
        (
            "403|UnrecognizedClientException|The security token included in the request is invalid.",
            errors.AuthenticationError,
            401,
        ),
        (
            "403|ExpiredTokenException|The security token included in the request is expired",
            errors.AuthenticationError,
            401,
        ),
        (
            "404|ResourceNotFoundException|This model version has reached the end of its life. Please refer to the AWS documentation for more details.",
            errors.ModelRetiredError,
            404,
        ),
        (
            "404|ResourceNotFoundException|Access denied. This Model is marked by provider as Legacy and you have not been actively using the model in the last 15 days. Please upgrade to an active model on Amazon Bedrock",
            errors.ModelRetiredError,
            404,
        ),
        ("404|ResourceNotFoundException|Inference profile not found", errors.UnknownModelError, 404),
        ("429|ThrottlingException|Too many requests, please wait before trying again.", errors.RateLimitError, 429),
        ("429|ModelNotReadyException|Model is not ready", errors.RateLimitError, 429),
        ("400|ServiceQuotaExceededException|quota", errors.RateLimitError, 429),
        (
            "408|ModelTimeoutException|Model has timed out in processing the request. Try your request again.",
            errors.RequestTimeoutError,
            408,
        ),
        ("424|ModelErrorException|The model failed", errors.ProviderError, 502),
        ("500|InternalServerException|boom", errors.ProviderError, 502),
        ("503|ServiceUnavailableException|unavailable", errors.ProviderError, 502),
    ],
)
def test_bedrock_errors_map_to_the_hierarchy(faulty, aws, wire, cls, status):
    code, message = wire.split("|", 2)[1:]
    with pytest.raises(cls) as info:
        gesso.image_generation(FAULTY, wire, max_retries=0, **aws)
    err = info.value
    assert type(err) is cls
    assert err.status_code == status
    assert f"Bedrock {code}: {message}" in str(err)
    assert err.model == "test.faulty-v1"
    assert err.__cause__ is not None, "the botocore error is chained"
    assert err.to_dict()["error"]["message"] == str(err)


def test_provider_errors_keep_what_bedrock_said(faulty, aws):
    with pytest.raises(errors.ProviderError) as info:
        gesso.image_generation(FAULTY, "424|ModelErrorException|The model failed", max_retries=0, **aws)
    assert (info.value.provider_status, info.value.provider_code) == (424, "ModelErrorException")


def test_unreachable_endpoint_is_a_provider_error(aws):
    aws["aws_bedrock_runtime_endpoint"] = "http://127.0.0.1:9"
    with pytest.raises(errors.ProviderError, match="Could not reach Bedrock"):
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", max_retries=0, **aws)


def test_missing_region_names_the_options(aws):
    del aws["aws_region_name"]
    with pytest.raises(
        errors.InvalidRequestError,
        match=r"pass aws_region_name \(--region on the command line\), use a model_id ARN that names its region, set AWS_REGION or AWS_DEFAULT_REGION",
    ) as info:
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", **aws)
    assert info.value.param == "aws_region_name"


def test_missing_profile_names_the_parameter(aws):
    del aws["aws_access_key_id"], aws["aws_secret_access_key"]
    with pytest.raises(errors.InvalidRequestError, match="aws_profile_name") as info:
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", aws_profile_name="nope", **aws)
    assert info.value.param == "aws_profile_name"


def test_secrets_never_appear_in_errors_or_reprs(emulator):
    secret, token = "SUPERSECRETVALUE123", "SESSIONTOKEN456"
    kwargs = dict(
        aws_bedrock_runtime_endpoint=emulator.url, aws_region_name="us-east-1",
        aws_access_key_id="AKIDWRONG", aws_secret_access_key=secret, aws_session_token=token,
    )  # fmt: skip
    with pytest.raises(errors.AuthenticationError) as info:
        gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", **kwargs)
    for text in (str(info.value), repr(info.value), str(info.value.to_dict()), repr(info.value.__cause__)):
        assert secret not in text and token not in text
    from gesso_bedrock.target import AwsCredentials, Target

    target = Target(
        model_id="m", credentials=AwsCredentials(access_key_id="AKID", secret_access_key=secret, session_token=token)
    )
    assert secret not in repr(target) and token not in repr(target)
    assert all(secret not in repr(key) and token not in repr(key) for key in transport._clients)


def test_one_cached_client_per_region_credentials_endpoint_and_timeout(aws):
    gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", **aws)
    gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "y", **aws)
    assert len(transport._clients) == 1
    client = next(iter(transport._clients.values()))
    config = client.meta.config
    assert config.max_pool_connections >= 100
    assert config.read_timeout == transport.DEFAULT_READ_TIMEOUT >= 300
    assert config.retries["total_max_attempts"] == 1
    gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", timeout=42, **aws)
    assert len(transport._clients) == 2
    assert any(c.meta.config.read_timeout == 42 for c in transport._clients.values())
    gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", **{**aws, "aws_region_name": "eu-west-1"})
    assert len(transport._clients) == 3


def test_import_gesso_is_light():
    code = (
        "import sys, gesso; "
        "heavy = [m for m in ('boto3', 'botocore', 'pluggy', 'jsonschema', 'cattrs', 'attrs') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_calls_skip_botocores_send_path(aws, emulator, monkeypatch):
    """botocore resolves and signs; the engine sends: the client's own invoke_model is never used."""
    from botocore.client import BaseClient

    def never(*args, **kwargs):
        raise AssertionError("botocore's send path was used")

    monkeypatch.setattr(BaseClient, "_make_api_call", never)
    response = gesso.image_generation("bedrock/amazon.nova-canvas-v1:0", "x", **aws)
    assert response.data and emulator.requests[-1].signed_by.access_key_id == aws["aws_access_key_id"]
    assert emulator.requests[-1].headers["Authorization"].startswith("AWS4-HMAC-SHA256 ")


@pytest.mark.parametrize(
    ("model_id", "extra", "token"),
    [
        ("amazon.nova-canvas-v1:0", {}, None),
        (
            "us.stability.stable-image-inpaint-v1:0",
            {"X-Amzn-Bedrock-GuardrailIdentifier": "abc", "X-Team": "a  b "},
            None,
        ),
        ("arn:aws:bedrock:eu-west-1:000000000000:application-inference-profile/a0a0a0a0a0a0", {}, "session-token"),
        ("..", {"User-Agent": "ignored by SigV4"}, None),
    ],
)
def test_the_engines_signature_is_botocores(monkeypatch, model_id, extra, token):
    """gesso signs without botocore's request object: the same request, at the same instant, gets
    the same Authorization header as botocore's SigV4Auth gives it."""
    import datetime
    from urllib.parse import quote

    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from gesso_bedrock.engine import sign_v4

    now = datetime.datetime(2026, 11, 30, 12, 34, 56, tzinfo=datetime.timezone.utc)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: now.replace(tzinfo=None))
    credentials = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
    for endpoint in ("https://bedrock-runtime.us-east-1.amazonaws.com", "http://127.0.0.1:4010"):
        url = f"{endpoint}/model/{quote(model_id, safe='')}/invoke"
        headers = {"Content-Type": "application/json", "Accept": "application/json", **extra}
        body = b'{"taskType":"TEXT_IMAGE","textToImageParams":{"text":"otter"}}'
        request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
        botocore.auth.SigV4Auth(credentials, "bedrock", "us-east-1").add_auth(request)
        ours = sign_v4(url, headers, body, credentials, "us-east-1", now=now)
        assert ours["Authorization"] == request.headers["Authorization"]
        assert ours["X-Amz-Date"] == request.headers["X-Amz-Date"]
        assert ours.get("X-Amz-Security-Token") == request.headers.get("X-Amz-Security-Token")
