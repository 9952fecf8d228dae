"""Credentials for the Bedrock transport: resolved once per identity, in this order.

1. ``api_key`` (a Bedrock API key) -> bearer auth instead of SigV4.
2. ``aws_web_identity_token`` + ``aws_role_name`` -> STS AssumeRoleWithWebIdentity.
3. ``aws_role_name`` -> STS AssumeRole, from the identity given by keys, profile or the default chain.
4. ``aws_access_key_id`` / ``aws_secret_access_key`` (/ ``aws_session_token``) -> static keys.
5. ``aws_profile_name`` -> that profile of the shared config and credentials files.
6. ``AWS_BEARER_TOKEN_BEDROCK`` in the environment, when none of the above was given -> bearer auth.
7. Otherwise boto3's default chain (environment, shared files, container or instance roles).

Assumed-role credentials are refreshed by botocore before they expire (15 minutes ahead), so a
long-lived process never signs with expired credentials and one identity makes one STS call at a time.

An identity is its credentials object, nothing more: botocore's sessions are shared, one per profile (and one for
the default), and every session reads the service models and endpoint data through one loader, so a new identity
loads no data and builds no session. A shared session resolves no credentials of its own: each identity's are
resolved by :func:`credentials`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gesso import errors
from gesso.redact import redact
from gesso_bedrock.target import AwsCredentials

BEARER_ENV = "AWS_BEARER_TOKEN_BEDROCK"
DEFAULT_SESSION_NAME_PREFIX = "gesso"
#: botocore sessions kept, one per profile named (each about 0.15 MB: its data is the shared loader's)
_SESSION_CACHE_SIZE = 64


def bearer_token(creds: AwsCredentials) -> str | None:
    """The Bedrock API key to use, if the call authenticates with one (explicit, or from the env)."""
    if creds.api_key:
        return creds.api_key
    if creds.explicit_sigv4:
        return None
    return os.environ.get(BEARER_ENV) or None


class _StaticToken:
    """A botocore token provider that always answers one Bedrock API key (or none)."""

    def __init__(self, token: str | None) -> None:
        from botocore.tokens import FrozenAuthToken

        self._token = FrozenAuthToken(token) if token else None

    def load_token(self, **_: Any) -> Any:
        return self._token


class _FixedCredentials:
    """A botocore credential provider that answers one (refreshable) credentials object (or none)."""

    def __init__(self, credentials: Any) -> None:
        self._credentials = credentials

    def load_credentials(self) -> Any:
        return self._credentials


class _Shared:
    """One profile's botocore session and the lock it is used under (botocore's sessions are not thread-safe)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.lock = threading.RLock()


_loader: Any = None
_sessions: dict[str | None, _Shared] = {}
_lock = threading.Lock()


def new_session(profile: str | None = None, *, credentials: Any = None, token: str | None = None) -> Any:
    """A botocore session of ``profile`` (``None``: the default chain's) that signs with ``credentials`` or
    ``token`` (else with nothing) and shares the one loader, so it loads no service data of its own."""
    import botocore.session

    global _loader
    session = botocore.session.Session(profile=profile)
    with _lock:
        if _loader is None:
            _loader = session.get_component("data_loader")
    session.register_component("data_loader", _loader)
    session.register_component("credential_provider", _FixedCredentials(credentials))
    session.register_component("token_provider", _StaticToken(token))
    return session


@contextmanager
def session(profile: str | None) -> Iterator[Any]:
    """The shared botocore session of ``profile``, held for this thread while in use. A profile that is not in
    the shared files raises botocore's ``ProfileNotFound``, and is not kept."""
    shared = _sessions.get(profile)
    if shared is None:
        made = new_session(profile)
        made.get_scoped_config()  # the profile exists
        with _lock:
            shared = _sessions.get(profile)
            if shared is None:
                if len(_sessions) >= _SESSION_CACHE_SIZE:
                    _sessions.pop(next(iter(_sessions)))
                shared = _sessions[profile] = _Shared(made)
    with shared.lock:
        yield shared.session


def clear_sessions() -> None:
    """Drop the shared sessions (they cache the shared files' contents), keeping the loaded service data."""
    with _lock:
        _sessions.clear()


def credentials(
    creds: AwsCredentials, *, region: str | None, client_region: str, ssl_verify: bool | str | None, model: str
) -> Any:
    """The botocore credentials ``creds`` sign with (see the module docstring for the order), refreshed by
    botocore where they expire; ``None`` for bearer auth, or when the default chain finds none. ``region`` is the
    call's (``None``: STS's is us-east-1), ``client_region`` the one its client resolved. May call STS."""
    if bearer_token(creds):
        return None
    if creds.role_name:
        return _assumed_role(creds, region, ssl_verify, model)
    return _source_credentials(creds, client_region)


def _source_credentials(creds: AwsCredentials, region: str | None) -> Any:
    """What static keys, a profile or the default chain give, as boto3's session would resolve them."""
    key, secret = creds.access_key_id, creds.secret_access_key
    if key and secret:  # static keys (options.check_credentials refuses one without the other, or a token alone)
        from botocore.credentials import Credentials

        return Credentials(key, secret, creds.session_token)
    from botocore.credentials import create_credential_resolver

    with session(creds.profile_name) as shared:
        return create_credential_resolver(shared, region_name=region).load_credentials()


def _assumed_role(creds: AwsCredentials, region: str | None, ssl_verify: bool | str | None, model: str) -> Any:
    from botocore.credentials import RefreshableCredentials
    from botocore.exceptions import BotoCoreError, ClientError
    from botocore.parsers import ResponseParserError

    session_name = creds.session_name or f"{DEFAULT_SESSION_NAME_PREFIX}-{int(time.time())}"
    how = "AssumeRoleWithWebIdentity" if creds.web_identity_token else "AssumeRole"

    def fetch() -> dict[str, str]:
        sts = _sts_client(creds, region, ssl_verify)
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


def _sts_client(creds: AwsCredentials, region: str | None, ssl_verify: bool | str | None) -> Any:
    """An STS client that signs as the role's source identity (a web identity's call is unsigned), made for
    each fetch on the shared session, so a refresh sees the source's current credentials."""
    region = region or "us-east-1"
    source = None if creds.web_identity_token else _source_credentials(creds, region)
    frozen = source.get_frozen_credentials() if source is not None else None
    with session(None if creds.web_identity_token else creds.profile_name) as shared:
        return shared.create_client(
            "sts",
            region_name=region,
            endpoint_url=creds.sts_endpoint,
            verify=ssl_verify,
            aws_access_key_id=frozen.access_key if frozen else None,
            aws_secret_access_key=frozen.secret_key if frozen else None,
            aws_session_token=frozen.token if frozen else None,
        )


def _forget_threads() -> None:
    """In a forked child: a lock another thread of the parent held would never be released."""
    global _lock, _sessions
    _lock, _sessions = threading.Lock(), {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_threads)
