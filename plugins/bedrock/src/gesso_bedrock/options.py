"""The Bedrock provider's options: the call kwargs it takes (litellm's names), checked and turned into a
:class:`Target` before anything is sent.

Credentials, region, endpoint, timeouts and retries; ``model_id`` (what to invoke) and ``base_model``; the
guardrail and trace settings and ``extra_headers``, which travel as InvokeModel headers. Kwargs that look
like other SDKs' names for these (``aws_region``, ``api_base``...) are refused with what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from gesso import options as call_options
from gesso import redact
from gesso.errors import Violation
from gesso.params import short
from gesso_bedrock.target import AwsCredentials, Target

OPTIONS = (
    "model_id", "base_model", "aws_access_key_id", "aws_secret_access_key", "aws_session_token",
    "aws_profile_name", "aws_role_name", "aws_session_name", "aws_external_id", "aws_web_identity_token",
    "aws_sts_endpoint", "api_key", "aws_region_name", "aws_bedrock_runtime_endpoint", "ssl_verify",
    "connect_timeout", "max_retries", "retry_budget",
    "guardrailIdentifier", "guardrailVersion", "trace", "extra_headers",
)  # fmt: skip
_NON_STRING = ("ssl_verify", "connect_timeout", "max_retries", "retry_budget", "guardrailVersion", "extra_headers")
STRING_OPTIONS = frozenset(k for k in OPTIONS if k not in _NON_STRING)
#: what a proxy deployment may let its callers set: how long and how often to try, and the guardrail
GRANTABLE = ("connect_timeout", "max_retries", "retry_budget", "guardrailIdentifier", "guardrailVersion", "trace")
SECRET_OPTIONS = ("aws_secret_access_key", "aws_session_token", "aws_external_id", "aws_web_identity_token", "api_key")

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
    "guardrail_identifier": "use guardrailIdentifier",
    "guardrail_version": "use guardrailVersion",
}


def habit(key: str) -> str | None:
    """Advice for a kwarg that looks like an AWS option but is none (a litellm name, a misspelling)."""
    if key in HABITS:
        return HABITS[key]
    if not key.startswith("aws_"):
        return None
    import difflib

    names = [n for n in OPTIONS if n.startswith("aws_")]
    guess = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    return f"did you mean {guess[0]}?" if guess else f"the AWS settings are {', '.join(names)}"


MAX_RETRIES = 100

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


#: An AWS region as botocore puts it into a host name (``us-east-1``, ``us-gov-west-1``, ``local``).
REGION_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
#: Bedrock ARNs: foundation models have no account; everything else has a 12-digit one.
ARN_RE = re.compile(
    r"^arn:aws(?:-[a-z]+)*:bedrock:[a-z0-9-]{1,20}:"
    r"(?::foundation-model/[a-zA-Z0-9._:-]+|\d{12}:[a-z-]+/[a-zA-Z0-9._:/-]+)$"
)
MODEL_ID_RE = re.compile(r"^[a-zA-Z0-9._:-]{1,2048}$")


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
    from gesso_bedrock.auth import BEARER_ENV, bearer_token

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
    """The :class:`Target` of the call; every check of the options adds to ``problems``."""
    call_options.strings(opts, STRING_OPTIONS, problems)
    for key in ("connect_timeout", "retry_budget"):
        call_options.positive(key, opts.get(key), problems, maximum=call_options.MAX_SECONDS)
    call_options.positive(
        "max_retries", opts.get("max_retries"), problems, integer=True, zero=True, maximum=MAX_RETRIES
    )
    ssl_verify = opts.get("ssl_verify")
    if ssl_verify is not None and not isinstance(ssl_verify, (bool, str)):
        problems.append(Violation("ssl_verify", f"must be true, false or a CA bundle path (got {ssl_verify!r})"))
    if opts.get("aws_web_identity_token") and not opts.get("aws_role_name"):
        problems.append(Violation("aws_web_identity_token", "needs aws_role_name: the role to assume with the token"))
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
        region=region,
        credentials=credentials,
        endpoint_url=endpoint,
        timeout=timeout,
        connect_timeout=opts.get("connect_timeout"),
        max_retries=opts.get("max_retries"),
        retry_budget=opts.get("retry_budget"),
        ssl_verify=ssl_verify,
        headers=headers(opts, problems),
    )
