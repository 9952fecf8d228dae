"""Credentials for the Bedrock transport: one boto3 session per identity, resolved in this order.

1. ``api_key`` (a Bedrock API key) -> bearer auth instead of SigV4.
2. ``aws_web_identity_token`` + ``aws_role_name`` -> STS AssumeRoleWithWebIdentity.
3. ``aws_role_name`` -> STS AssumeRole, from the identity given by keys, profile or the default chain.
4. ``aws_access_key_id`` / ``aws_secret_access_key`` (/ ``aws_session_token``) -> static keys.
5. ``aws_profile_name`` -> that profile of the shared config and credentials files.
6. ``AWS_BEARER_TOKEN_BEDROCK`` in the environment, when none of the above was given -> bearer auth.
7. Otherwise boto3's default chain (environment, shared files, container or instance roles).

Assumed-role credentials are refreshed by botocore before they expire (15 minutes ahead), so a
long-lived process never signs with expired credentials and one identity makes one STS call at a time.
"""

from __future__ import annotations

import os
import time
from typing import Any

from gesso import errors
from gesso.redact import redact
from gesso_bedrock.target import AwsCredentials

BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"
DEFAULT_SESSION_NAME_PREFIX = "gesso"


def bearer_token(creds: AwsCredentials) -> str | None:
    """The Bedrock API key to use, if the call authenticates with one (explicit, or from the env)."""
    if creds.api_key:
        return creds.api_key
    if creds.explicit_sigv4:
        return None
    return os.environ.get(BEARER_ENV) or None


class _StaticToken:
    """A botocore token provider that always answers one Bedrock API key."""

    def __init__(self, token: str) -> None:
        from botocore.tokens import FrozenAuthToken

        self._token = FrozenAuthToken(token)

    def load_token(self, **_: Any) -> Any:
        return self._token


class _FixedCredentials:
    """A botocore credential provider that answers one (refreshable) credentials object."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def load_credentials(self) -> Any:
        return self._credentials


def make_session(creds: AwsCredentials, *, region: str | None, ssl_verify: bool | str | None, model: str) -> Any:
    """A boto3 session that signs as ``creds`` says (see the module docstring for the order)."""
    import boto3
    import botocore.session

    token = bearer_token(creds)
    if token:
        core = botocore.session.Session()
        core.register_component("token_provider", _StaticToken(token))
        return boto3.session.Session(botocore_session=core, region_name=region)
    if creds.role_name:
        core = botocore.session.Session()
        core.register_component(
            "credential_provider", _FixedCredentials(_assumed_role(creds, region, ssl_verify, model))
        )
        return boto3.session.Session(botocore_session=core, region_name=region)
    return _source_session(creds, region)


def _source_session(creds: AwsCredentials, region: str | None) -> Any:
    import boto3

    return boto3.session.Session(
        aws_access_key_id=creds.access_key_id,
        aws_secret_access_key=creds.secret_access_key,
        aws_session_token=creds.session_token,
        profile_name=creds.profile_name,
        region_name=region,
    )


def _assumed_role(creds: AwsCredentials, region: str | None, ssl_verify: bool | str | None, model: str) -> Any:
    from botocore.credentials import RefreshableCredentials
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    session_name = creds.session_name or f"{DEFAULT_SESSION_NAME_PREFIX}-{int(time.time())}"
    how = "AssumeRoleWithWebIdentity" if creds.web_identity_token else "AssumeRole"

    def fetch() -> dict[str, str]:
        source = _source_session(AwsCredentials() if creds.web_identity_token else creds, region)
        sts = source.client(
            "sts",
            region_name=region or "us-east-1",
            endpoint_url=creds.sts_endpoint,
            verify=ssl_verify,
        )
        try:
            if creds.web_identity_token:
                answer = sts.assume_role_with_web_identity(
                    RoleArn=creds.role_name, RoleSessionName=session_name, WebIdentityToken=creds.web_identity_token
                )
            else:
                extra = {"ExternalId": creds.external_id} if creds.external_id else {}
                answer = sts.assume_role(RoleArn=creds.role_name, RoleSessionName=session_name, **extra)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise errors.AuthenticationError(
                f"{how} for role {creds.role_name} failed: {error.get('Code')}: {error.get('Message')}", model=model
            ) from exc
        except (BotoCoreError, ResponseParserError) as exc:  # the parser's error is no BotoCoreError
            said = redact(str(exc))
            raise errors.AuthenticationError(f"{how} for role {creds.role_name} failed: {said}", model=model) from exc
        issued = answer["Credentials"]
        return {
            "access_key": issued["AccessKeyId"],
            "secret_key": issued["SecretAccessKey"],
            "token": issued["SessionToken"],
            "expiry_time": issued["Expiration"].isoformat(),
        }

    method = "assume-role-with-web-identity" if creds.web_identity_token else "sts-assume-role"
    return RefreshableCredentials.create_from_metadata(metadata=fetch(), refresh_using=fetch, method=method)
