"""The call-level kwargs of ``image_generation``: OpenAI's parameters and the transport's, checked and
turned into a :class:`~gesso.types.Target` before anything is sent.

Every other kwarg is a provider parameter, validated by the model's family. A kwarg that looks like a
litellm or OpenAI habit (``aws_region``, ``api_base``, ``extra_body``...) is refused with what to write
instead, never passed to the family to be misread.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gesso import redact
from gesso.errors import Violation
from gesso.params import short
from gesso.types import AwsCredentials, Target

RESPONSE_FORMATS = ("b64_json", "url")

#: kwargs that configure the call rather than the model (everything else is a provider parameter)
OPENAI_KWARGS = ("n", "size", "quality", "response_format", "style", "user", "timeout")
TRANSPORT_KWARGS = (
    "model_id", "base_model", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "aws_profile_name", "aws_role_name", "aws_session_name", "aws_external_id", "aws_web_identity_token",
    "aws_sts_endpoint", "api_key", "aws_region_name", "aws_bedrock_runtime_endpoint", "ssl_verify",
    "connect_timeout", "max_retries", "retry_budget",
    "guardrailIdentifier", "guardrailVersion", "trace", "extra_headers",
)  # fmt: skip
_NON_STRING_KWARGS = (
    "ssl_verify", "connect_timeout", "max_retries", "retry_budget", "guardrailVersion", "extra_headers",
)  # fmt: skip
STRING_KWARGS = frozenset(("quality", "style", "user", *(k for k in TRANSPORT_KWARGS if k not in _NON_STRING_KWARGS)))
CALL_NAMES = frozenset((*OPENAI_KWARGS, *TRANSPORT_KWARGS))
ENV_PREFIX = "os.environ/"

#: Names other SDKs use, and what to write in gesso instead.
HABITS = {
    "aws_region": "use aws_region_name",
    "region_name": "use aws_region_name",
    "region": "use aws_region_name",
    "api_base": "use aws_bedrock_runtime_endpoint (the Bedrock Runtime endpoint URL)",
    "base_url": "use aws_bedrock_runtime_endpoint (the Bedrock Runtime endpoint URL)",
    "endpoint_url": "use aws_bedrock_runtime_endpoint (the Bedrock Runtime endpoint URL)",
    "aws_secret_access_id": "use aws_access_key_id (and aws_secret_access_key)",
    "aws_profile": "use aws_profile_name",
    "profile_name": "use aws_profile_name",
    "extra_body": "pass provider parameters as keyword arguments themselves (e.g. cfgScale=7): gesso validates "
    "each one against the model's schema; nothing is forwarded unread",
    "metadata": "gesso sends nothing but the model's own parameters to Bedrock, so there is nowhere for metadata "
    "to go; keep it in your application (user= is logged at debug level)",
    "custom_llm_provider": "gesso takes the provider from the model string: model='bedrock/<model id>'",
    "drop_params": "gesso never drops parameters silently: leave out the ones the model does not take (the error "
    "names them)",
    "guardrail_identifier": "use guardrailIdentifier",
    "guardrail_version": "use guardrailVersion",
}

#: Bedrock's InvokeModel header patterns (botocore's bedrock-runtime service model).
GUARDRAIL_ID_RE = re.compile(
    r"^(([a-z0-9]+)|(arn:aws(-[^:]+)?:bedrock:[a-z0-9-]{1,20}:[0-9]{12}:guardrail/[a-z0-9]+))$"
)
GUARDRAIL_VERSION_RE = re.compile(r"^(([1-9][0-9]{0,7})|(DRAFT))$")
TRACE_VALUES = ("ENABLED", "DISABLED", "ENABLED_FULL")
GUARDRAIL_HEADERS = {
    "guardrailIdentifier": "X-Amzn-Bedrock-GuardrailIdentifier",
    "guardrailVersion": "X-Amzn-Bedrock-GuardrailVersion",
    "trace": "X-Amzn-Bedrock-Trace",
}
#: Headers the transport sets itself; extra_headers may not replace them.
RESERVED_HEADERS = frozenset(
    {"authorization", "host", "content-length", "content-type", "accept", "x-amz-date", "x-amz-security-token",
     "x-amz-content-sha256", "transfer-encoding", "connection"}
)  # fmt: skip
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[Violation]]:
    """Take the call-level kwargs out of ``kwargs`` (left holding the provider parameters), reading
    ``os.environ/NAME`` values; refuse other SDKs' names with what to write instead."""
    problems: list[Violation] = []
    opts = {key: from_env(key, kwargs.pop(key), problems) for key in [k for k in kwargs if k in CALL_NAMES]}
    for key in [k for k in kwargs if isinstance(k, str) and (k in HABITS or k.startswith("aws_"))]:
        kwargs.pop(key)
        problems.append(Violation(key, f"is not a gesso parameter: {HABITS.get(key) or _closest_call_name(key)}"))
    return opts, problems


def _closest_call_name(name: str) -> str:
    import difflib

    names = [n for n in TRANSPORT_KWARGS if n.startswith("aws_")]
    guess = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
    return f"did you mean {guess[0]}?" if guess else f"the AWS settings are {', '.join(names)}"


def from_env(key: str, value: Any, problems: list[Violation]) -> Any:
    """litellm's convention: ``"os.environ/NAME"`` means the value of environment variable NAME."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        found = os.environ.get(name)
        if not found:
            problems.append(Violation(key, f"environment variable {name} (from {value!r}) is not set"))
        return found
    return value


#: Upper bounds: a day for any wait, enough retries for any backoff budget, and images per call (each
#: family has its own, lower limit; this one stops absurd values before any family builds bodies).
MAX_SECONDS = 86_400
MAX_RETRIES = 100
MAX_IMAGES = 1000

#: An AWS region as botocore puts it into a host name (``us-east-1``, ``us-gov-west-1``, ``local``).
REGION_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: Bedrock ARNs: foundation models have no account; everything else has a 12-digit one.
ARN_RE = re.compile(
    r"^arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]{1,20}:"
    r"(?::foundation-model/[a-zA-Z0-9._:-]+|\d{12}:[a-z-]+/[a-zA-Z0-9._:/-]+)$"
)
MODEL_ID_RE = re.compile(r"^[a-zA-Z0-9._:-]{1,2048}$")


def positive(
    key: str, value: Any, problems: list[Violation], *, integer: bool = False, zero: bool = False, maximum: float
) -> None:
    """``value`` is None, or a finite number (an int, with ``integer``) above 0 (or 0, with ``zero``) and at
    most ``maximum``."""
    if value is None:
        return
    kinds = int if integer else (int, float)
    what = ("a non-negative" if zero else "a positive") + (" integer" if integer else " number of seconds")
    if isinstance(value, bool) or not isinstance(value, kinds) or (isinstance(value, float) and math.isnan(value)):
        problems.append(Violation(key, f"must be {what} (got {short(value)})"))
    elif value < 0 or (value == 0 and not zero) or value > maximum:
        problems.append(Violation(key, f"must be {what}, at most {maximum:,} (got {short(value)})"))


def check_endpoint(url: Any, problems: list[Violation]) -> None:
    """The endpoint must be an absolute http(s) URL; botocore's own error for one that is not says neither
    which parameter nor what is expected."""
    if url is None or not isinstance(url, str):
        return
    example = "e.g. https://bedrock-runtime.us-east-1.amazonaws.com or http://127.0.0.1:4010"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(
            Violation("aws_bedrock_runtime_endpoint", f"must be a URL starting http:// or https://, {example} "
                      f"(got {redact.redact(url)!r})")
        )  # fmt: skip


def headers(opts: Mapping[str, Any], problems: list[Violation]) -> tuple[tuple[str, str], ...]:
    """The extra HTTP headers of the call: the guardrail and trace settings (as Bedrock's
    ``X-Amzn-Bedrock-*`` headers) and ``extra_headers``, checked before anything is sent."""
    found: dict[str, tuple[str, str, str]] = {}  # lower-case name -> (name, value, source)
    identifier, version = opts.get("guardrailIdentifier"), opts.get("guardrailVersion")
    if isinstance(version, int) and not isinstance(version, bool):
        version = str(version)
    if isinstance(identifier, str) and (not GUARDRAIL_ID_RE.match(identifier) or len(identifier) > 2048):
        problems.append(
            Violation("guardrailIdentifier", f"must be a guardrail id (lower-case letters and digits) or a guardrail "
                      f"ARN, arn:aws:bedrock:REGION:ACCOUNT:guardrail/ID (got {identifier!r})")
        )  # fmt: skip
    if version is not None and not (isinstance(version, str) and GUARDRAIL_VERSION_RE.match(version)):
        problems.append(
            Violation("guardrailVersion", f'must be a version number 1 to 99999999 or "DRAFT" (got {version!r})')
        )
    if (identifier is None) != (version is None):
        given, missing = ("guardrailIdentifier", "guardrailVersion")
        if version is not None:
            given, missing = missing, given
        problems.append(Violation(missing, f"is required with {given}: Bedrock applies a guardrail only as a pair"))
    trace = opts.get("trace")
    if isinstance(trace, str) and trace not in TRACE_VALUES:
        problems.append(Violation("trace", f"must be one of: {', '.join(TRACE_VALUES)} (got {trace!r})"))
    for key, value in (("guardrailIdentifier", identifier), ("guardrailVersion", version), ("trace", trace)):
        if isinstance(value, str):
            found[GUARDRAIL_HEADERS[key].lower()] = (GUARDRAIL_HEADERS[key], value, key)
    extra = opts.get("extra_headers")
    if extra is not None and not isinstance(extra, Mapping):
        got = type(extra).__name__
        problems.append(Violation("extra_headers", f"must be a mapping of header names to strings (got {got})"))
        extra = None
    for name, value in (extra or {}).items():
        where = f"extra_headers[{name!r}]"
        if not isinstance(name, str) or not _TOKEN_RE.match(name):
            problems.append(Violation(where, "is not a valid HTTP header name"))
        elif name.lower() in RESERVED_HEADERS:
            problems.append(Violation(where, "is set by gesso's transport (signing, body) and cannot be replaced"))
        elif not isinstance(value, str) or any(c in value for c in "\r\n\0") or not value.isascii():
            problems.append(Violation(where, f"must be a single-line ASCII string (got {type(value).__name__})"))
        elif name.lower() in found and found[name.lower()][1] != value:
            problems.append(
                Violation(where, f"contradicts {found[name.lower()][2]}={found[name.lower()][1]!r}; give it once")
            )
        else:
            found.setdefault(name.lower(), (name, value, "extra_headers"))
    return tuple((name, value) for name, value, _ in found.values())


def check_bearer_scheme(credentials: AwsCredentials, endpoint: str | None, problems: list[Violation]) -> None:
    """A Bedrock API key travels only over HTTPS (botocore refuses to send it otherwise)."""
    from gesso.bedrock.auth import BEARER_ENV, bearer_token

    if not (isinstance(endpoint, str) and endpoint.lower().startswith("http://") and bearer_token(credentials)):
        return
    source = "api_key" if credentials.api_key else BEARER_ENV
    problems.append(
        Violation(source, f"a Bedrock API key is sent only over HTTPS, but aws_bedrock_runtime_endpoint is "
                  f"{redact.redact(endpoint)!r}: use an https:// endpoint, or sign with AWS keys instead")
    )  # fmt: skip


def check_credentials(credentials: AwsCredentials, problems: list[Violation]) -> None:
    """Static keys come as a pair, and a session token only with them."""
    key, secret = credentials.access_key_id, credentials.secret_access_key
    if bool(key) != bool(secret):
        given, missing = ("aws_access_key_id", "aws_secret_access_key")
        if secret:
            given, missing = missing, given
        problems.append(Violation(missing, f"is required with {given}: AWS keys come as a pair"))
    elif credentials.session_token and not key:
        problems.append(
            Violation("aws_session_token", "needs aws_access_key_id and aws_secret_access_key: it belongs to them")
        )


def check_model_id(model_id: Any, param: str, problems: list[Violation]) -> None:
    """What is invoked must fit Bedrock's ``modelId`` (an id, or an ARN of the documented shape), so a
    malformed one is refused here rather than by Bedrock."""
    if not isinstance(model_id, str):
        return
    if model_id.startswith("arn:"):
        if len(model_id) > 2048 or not ARN_RE.match(model_id):
            problems.append(
                Violation(param, "must be a Bedrock ARN, arn:aws:bedrock:REGION::foundation-model/ID or "
                          f"arn:aws:bedrock:REGION:ACCOUNT(12 digits):KIND/ID (got {short(model_id)})")
            )  # fmt: skip
    elif not MODEL_ID_RE.match(model_id):
        problems.append(
            Violation(param, f"must be a Bedrock model id: letters, digits, '.', '-', ':' (got {short(model_id)})")
        )


def target(opts: Mapping[str, Any], *, model_id: str, timeout: float | None, problems: list[Violation]) -> Target:
    """The :class:`Target` of the call (its checks add to ``problems``)."""
    credentials = AwsCredentials(
        access_key_id=opts.get("aws_access_key_id"),
        secret_access_key=opts.get("aws_secret_access_key"),
        session_token=opts.get("aws_session_token"),
        profile_name=opts.get("aws_profile_name"),
        role_name=opts.get("aws_role_name"),
        session_name=opts.get("aws_session_name"),
        external_id=opts.get("aws_external_id"),
        web_identity_token=opts.get("aws_web_identity_token"),
        sts_endpoint=opts.get("aws_sts_endpoint"),
        api_key=opts.get("api_key"),
    )
    redact.remember((credentials.secret_access_key, credentials.session_token, credentials.external_id,
                     credentials.web_identity_token, credentials.api_key))  # fmt: skip
    redact.install()
    endpoint = opts.get("aws_bedrock_runtime_endpoint")
    check_endpoint(endpoint, problems)
    check_bearer_scheme(credentials, endpoint, problems)
    check_credentials(credentials, problems)
    check_model_id(model_id, "model_id" if opts.get("model_id") is not None else "model", problems)
    region = opts.get("aws_region_name")
    if isinstance(region, str) and not REGION_RE.match(region):
        problems.append(Violation("aws_region_name", f"must be an AWS region such as us-east-1 (got {region!r})"))
    return Target(
        model_id=model_id,
        region=opts.get("aws_region_name"),
        credentials=credentials,
        endpoint_url=endpoint,
        timeout=timeout,
        connect_timeout=opts.get("connect_timeout"),
        max_retries=opts.get("max_retries"),
        retry_budget=opts.get("retry_budget"),
        ssl_verify=opts.get("ssl_verify"),
        headers=headers(opts, problems),
    )
