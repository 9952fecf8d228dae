"""Where and how one Bedrock call is sent: the :class:`Target` the provider builds from the call's options
(``invocation.target``), with its :class:`AwsCredentials`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:  # the headers' converter as mypy's attrs plugin reads it; at run time ``tuple`` itself

    def _pairs(headers: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]: ...
else:
    _pairs = tuple


@attrs.frozen(kw_only=True)
class AwsCredentials:
    """How to authenticate one call; litellm's parameter names without the ``aws_`` prefix.

    Static keys, a shared-config profile, a role to assume (optionally with a web identity token), or a
    Bedrock API key (bearer). Empty means boto3's default chain. Secrets never appear in ``repr``.
    """

    access_key_id: str | None = None
    secret_access_key: str | None = attrs.field(default=None, repr=False)
    session_token: str | None = attrs.field(default=None, repr=False)
    profile_name: str | None = None
    role_name: str | None = None
    session_name: str | None = None
    external_id: str | None = attrs.field(default=None, repr=False)
    web_identity_token: str | None = attrs.field(default=None, repr=False)
    sts_endpoint: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)

    def __bool__(self) -> bool:
        return any(attrs.astuple(self))

    @property
    def explicit_sigv4(self) -> bool:
        """Whether the caller chose a SigV4 identity (keys, profile or role) rather than the default chain."""
        return any(
            (self.access_key_id, self.secret_access_key, self.profile_name, self.role_name, self.web_identity_token)
        )


@attrs.frozen(kw_only=True)
class Target:
    """Where and how to send a call: the invoke target id, region, credentials, endpoint, timeouts,
    retry bounds and extra headers. ``None`` means gesso's default (see :mod:`gesso_bedrock.transport`)."""

    model_id: str
    region: str | None = None
    credentials: AwsCredentials = attrs.field(factory=AwsCredentials)
    endpoint_url: str | None = None
    timeout: float | None = None
    connect_timeout: float | None = None
    max_retries: int | None = None
    retry_budget: float | None = None
    ssl_verify: bool | str | None = None
    #: extra HTTP headers of the call: the guardrail and trace headers, and the caller's ``extra_headers``
    headers: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_pairs)
