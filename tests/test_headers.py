"""Guardrails, trace and extra headers: sent as InvokeModel headers (never in the body), checked before
sending, and emulated (a guardrail needs its version; a guardrail intervention is a content-filter error).

AWS InvokeModel API reference (docs.aws.amazon.com/bedrock/latest/APIReference/API_runtime_InvokeModel.html):
the request carries ``X-Amzn-Bedrock-GuardrailIdentifier``, ``X-Amzn-Bedrock-GuardrailVersion`` and
``X-Amzn-Bedrock-Trace`` headers; "An error will be thrown ... You provide a guardrail identifier, but
guardrailVersion isn't specified"; the identifier pattern is
``(([a-z0-9]+)|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+))`` and trace is
``ENABLED | DISABLED | ENABLED_FULL``.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import ClientError

import gesso
from conftest import NOVA
from gesso.errors import ContentFilteredError, InvalidRequestError
from helpers import invoke

GUARDRAIL_ARN = "arn:aws:bedrock:us-east-1:123456789012:guardrail/abc123def"


def headers_of(emulator) -> dict[str, str]:
    return {k.lower(): v for k, v in emulator.requests[-1].headers.items()}


def test_guardrail_trace_and_extra_headers_are_sent_as_headers_only(aws, emulator):
    gesso.image_generation(
        NOVA, "A cute baby sea otter", guardrailIdentifier="abc123def", guardrailVersion="1", trace="ENABLED",
        extra_headers={"X-Team": "catalogue", "X-Amzn-Bedrock-Service-Tier": "priority"}, **aws,
    )  # fmt: skip
    sent = headers_of(emulator)
    assert sent["x-amzn-bedrock-guardrailidentifier"] == "abc123def"
    assert sent["x-amzn-bedrock-guardrailversion"] == "1"
    assert sent["x-amzn-bedrock-trace"] == "ENABLED"
    assert sent["x-team"] == "catalogue" and sent["x-amzn-bedrock-service-tier"] == "priority"
    # the headers are signed (the emulator verified the signature), and the body holds none of them
    assert "x-team" in sent["authorization"] and "x-amzn-bedrock-guardrailidentifier" in sent["authorization"]
    assert emulator.requests[-1].json() == {
        "taskType": "TEXT_IMAGE",
        "textToImageParams": {"text": "A cute baby sea otter"},
    }


def test_a_guardrail_arn_and_draft_and_an_integer_version_are_accepted(aws, emulator):
    gesso.image_generation(NOVA, "otter", guardrailIdentifier=GUARDRAIL_ARN, guardrailVersion="DRAFT", **aws)
    assert headers_of(emulator)["x-amzn-bedrock-guardrailversion"] == "DRAFT"
    gesso.image_generation(NOVA, "otter", guardrailIdentifier="abc123def", guardrailVersion=2, **aws)
    assert headers_of(emulator)["x-amzn-bedrock-guardrailversion"] == "2"


def test_headers_do_not_leak_into_the_next_call_on_the_same_client(aws, emulator):
    gesso.image_generation(NOVA, "otter", extra_headers={"X-Once": "1"}, **aws)
    gesso.image_generation(NOVA, "otter", **aws)
    assert "x-once" not in headers_of(emulator)


@pytest.mark.parametrize(
    ("kwargs", "param", "message"),
    [
        ({"guardrailIdentifier": "abc123def"}, "guardrailVersion", "is required with guardrailIdentifier"),
        ({"guardrailVersion": "1"}, "guardrailIdentifier", "is required with guardrailVersion"),
        (
            {"guardrailIdentifier": "Not_Valid", "guardrailVersion": "1"},
            "guardrailIdentifier",
            "must be a guardrail id",
        ),
        ({"guardrailIdentifier": "abc", "guardrailVersion": "0"}, "guardrailVersion", 'or "DRAFT"'),
        ({"guardrailIdentifier": "abc", "guardrailVersion": "latest"}, "guardrailVersion", 'or "DRAFT"'),
        ({"trace": "on"}, "trace", "must be one of: ENABLED, DISABLED, ENABLED_FULL"),
        ({"extra_headers": "X-A: 1"}, "extra_headers", "must be a mapping"),
        ({"extra_headers": {"Authorization": "Bearer x"}}, "extra_headers['Authorization']", "cannot be replaced"),
        ({"extra_headers": {"X-A": "one\r\nX-Injected: 1"}}, "extra_headers['X-A']", "single-line ASCII"),
        ({"extra_headers": {"X-A": 1}}, "extra_headers['X-A']", "single-line ASCII"),
        ({"extra_headers": {"bad header": "1"}}, "extra_headers['bad header']", "not a valid HTTP header name"),
        (
            {
                "guardrailIdentifier": "abc",
                "guardrailVersion": "1",
                "extra_headers": {"x-amzn-bedrock-guardrailversion": "2"},
            },
            "extra_headers['x-amzn-bedrock-guardrailversion']",
            "contradicts guardrailVersion='1'",
        ),
    ],
)
def test_bad_header_settings_are_refused_before_sending(aws, emulator, kwargs, param, message):
    with pytest.raises(InvalidRequestError) as info:
        gesso.image_generation(NOVA, "otter", **kwargs, **aws)
    assert any(v.path == param and message in v.message for v in info.value.violations), info.value
    assert len(emulator.requests) == 0


def test_the_emulator_refuses_a_guardrail_without_its_version(bedrock, emulator):
    body = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "otter"}}
    with pytest.raises(ClientError) as info:
        bedrock.invoke_model(
            modelId="amazon.nova-canvas-v1:0", body=b'{"taskType":"TEXT_IMAGE"}', guardrailIdentifier="abc"
        )
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "guardrail version is required" in info.value.response["Error"]["Message"]
    response = bedrock.invoke_model(
        modelId="amazon.nova-canvas-v1:0", body=json.dumps(body), guardrailIdentifier="abc",
        guardrailVersion="1", trace="ENABLED",
    )  # fmt: skip
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert len(invoke(bedrock, "amazon.nova-canvas-v1:0", body)["images"]) == 1


def test_a_guardrail_intervention_is_a_content_filter_error(aws, emulator):
    emulator.inject("guardrail")
    # the fault fires only on requests that name a guardrail
    assert len(gesso.image_generation(NOVA, "otter", **aws).data) == 1
    with pytest.raises(ContentFilteredError) as info:
        gesso.image_generation(NOVA, "otter", guardrailIdentifier="abc123def", guardrailVersion="1", **aws)
    assert info.value.status_code == 400 and info.value.code == "content_policy_violation"
    assert "guardrail" in info.value.message
    assert len(emulator.requests) == 2, "a content-filter answer is not retried"
