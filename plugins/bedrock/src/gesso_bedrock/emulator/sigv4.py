"""Check AWS Signature Version 4 ``Authorization`` headers the way AWS does (standard library only).

The emulator always checks that a request is SigV4-signed for service ``bedrock``; when it knows the
secret for the access key it also recomputes the signature, so tests prove the client really signs.
"""

from __future__ import annotations

import hashlib
import hmac
import posixpath
import re
from collections.abc import Mapping
from typing import Protocol
from urllib.parse import parse_qsl, quote

import attrs

ALGORITHM = "AWS4-HMAC-SHA256"
_AUTH_RE = re.compile(
    r"^AWS4-HMAC-SHA256\s+Credential=(?P<credential>[^,\s]+),\s*SignedHeaders=(?P<signed>[^,\s]+),"
    r"\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


class SignatureError(Exception):
    """The request is not signed correctly. ``code`` is the AWS error code to answer with."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@attrs.frozen
class SignedBy:
    """Who signed a request: the access key and the credential scope (date, region, service)."""

    access_key_id: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]


def parse_authorization(header: str) -> tuple[SignedBy, str]:
    match = _AUTH_RE.match(header.strip())
    if match is None:
        raise SignatureError(
            "IncompleteSignature",
            "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters.",
        )
    parts = match.group("credential").split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureError(
            "IncompleteSignature", f"Credential should be scoped correctly: {match.group('credential')}"
        )
    access_key, date, region, service, _ = parts
    signed = tuple(match.group("signed").split(";"))
    return SignedBy(access_key, date, region, service, signed), match.group("signature")


def _canonical_uri(raw_path: str) -> str:
    # botocore (non-S3): remove dot segments, then percent-encode the already-encoded path once more
    path = posixpath.normpath(raw_path) if raw_path not in ("", "/") else "/"
    if raw_path.endswith("/") and not path.endswith("/"):
        path += "/"
    return quote(path, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in parse_qsl(query, keep_blank_values=True))
    return "&".join(f"{k}={v}" for k, v in pairs)


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = hmac.new(f"AWS4{secret}".encode(), date.encode(), hashlib.sha256).digest()
    for part in (region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


class HeaderLookup(Protocol):
    """What :func:`verify` reads a request's headers through: a case-insensitive ``get``."""

    def get(self, name: str, /) -> str | None: ...


def verify(
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: HeaderLookup,
    body: bytes,
    secrets: Mapping[str, str] | None,
    service: str = "bedrock",
) -> SignedBy:
    """Check a request's SigV4 signature. ``headers`` must be case-insensitive (the emulator's ``Headers``).

    ``secrets`` maps access key ids to secret keys; ``None`` accepts any key without recomputing the
    signature (the header's shape, scope and service are still checked).
    """
    header = headers.get("Authorization")
    if not header:
        raise SignatureError("MissingAuthenticationTokenException", "Missing Authentication Token")
    signed_by, signature = parse_authorization(header)
    if signed_by.service != service:
        raise SignatureError(
            "InvalidSignatureException",
            f"Credential should be scoped to correct service: '{service}'.",
        )
    amz_date = headers.get("X-Amz-Date") or ""
    if not amz_date.startswith(signed_by.date):
        raise SignatureError(
            "InvalidSignatureException", "Date in Credential scope does not match YYYYMMDD from X-Amz-Date."
        )
    if secrets is None:
        return signed_by
    secret = secrets.get(signed_by.access_key_id)
    if secret is None:
        raise SignatureError("UnrecognizedClientException", "The security token included in the request is invalid.")
    payload_hash = headers.get("X-Amz-Content-SHA256") or hashlib.sha256(body).hexdigest()
    canonical_headers = "".join(
        f"{name}:{' '.join((headers.get(name) or '').split())}\n" for name in signed_by.signed_headers
    )
    canonical_request = "\n".join(
        (
            method.upper(),
            _canonical_uri(raw_path),
            _canonical_query(query),
            canonical_headers,
            ";".join(signed_by.signed_headers),
            payload_hash,
        )
    )
    scope = f"{signed_by.date}/{signed_by.region}/{signed_by.service}/aws4_request"
    string_to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical_request.encode()).hexdigest()))
    key = _signing_key(secret, signed_by.date, signed_by.region, signed_by.service)
    expected = hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, signature):
        raise SignatureError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
    return signed_by
