"""What differs when a call goes to Bedrock's ``Converse`` API rather than ``InvokeModel``: its guardrail travels in
the body (botocore's bedrock-runtime service model: Converse's ``guardrailConfig``, a GuardrailConfiguration of
``guardrailIdentifier``, ``guardrailVersion`` and ``trace`` ``enabled|disabled|enabled_full``), where InvokeModel
takes the ``X-Amzn-Bedrock-Guardrail*`` and ``X-Amzn-Bedrock-Trace`` headers. The URL, signing, retries, errors and
timeouts are InvokeModel's (:mod:`gesso_bedrock.engine`)."""

from __future__ import annotations

import json

import attrs

from gesso.types import Invocation
from gesso_bedrock.options import GUARDRAIL_HEADERS

#: the guardrail options' InvokeModel headers (lower-cased), by their GuardrailConfiguration member
GUARDRAIL = {name: GUARDRAIL_HEADERS[name].lower() for name in ("guardrailIdentifier", "guardrailVersion", "trace")}


def guarded(invocation: Invocation) -> Invocation:
    """``invocation`` with its guardrail headers moved into the body's ``guardrailConfig`` (unchanged without)."""
    target = invocation.target
    config: dict[str, str] = {}
    kept = []
    for name, value in target.headers:
        member = next((member for member, header in GUARDRAIL.items() if header == name.lower()), None)
        if member is None:
            kept.append((name, value))
        else:
            config[member] = value.lower() if member == "trace" else value
    if not config:
        return invocation
    body = json.loads(invocation.body)
    body["guardrailConfig"] = config
    return attrs.evolve(
        invocation, target=attrs.evolve(target, headers=kept), body=json.dumps(body, separators=(",", ":")).encode()
    )
