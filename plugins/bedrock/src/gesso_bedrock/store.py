"""The ``s3://bucket/prefix`` image store: with ``response_format="url"``, each image is uploaded to
``<prefix>/<uuid4 hex>.<ext>`` (its ``ContentType`` set) and the URL returned is a presigned HTTPS GET URL,
valid for ``image_url_expiry`` seconds (default an hour, at most seven days).

The S3 client is boto3's own, with boto3's default credential chain and region (environment variables,
shared files, container and instance roles), not the Bedrock call's credentials: the bucket belongs to the
application, often in another account or region than the model. Its endpoint is S3's, or an S3-compatible
server's from ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (botocore reads both). A failed upload is a
:class:`gesso.errors.ProviderError` naming the bucket, key and S3's error code, never a botocore traceback.

Importing this module imports no boto3; the first upload does.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from typing import Any

from gesso.errors import ProviderError
from gesso.types import StoreScheme

#: S3's bucket naming rules: 3-63 lowercase letters, digits, dots and hyphens, a letter or digit at each end
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3Store:
    """One call's ``s3://bucket/prefix`` store (see the module)."""

    def __init__(self, url: str, expires_in: int) -> None:
        parts = urllib.parse.urlsplit(url)
        if not _BUCKET_RE.match(parts.netloc) or ".." in parts.netloc:
            raise ValueError(
                "must be s3://<bucket>/<prefix>, the bucket named by S3's rules (3-63 lowercase letters, digits, "
                "dots and hyphens)"
            )
        if parts.query or parts.fragment:
            raise ValueError("an s3:// URL takes no query or fragment")
        self.bucket = parts.netloc
        self.prefix = urllib.parse.unquote(parts.path).strip("/")
        self.expires_in = expires_in

    def put(self, data: bytes, mime_type: str, name: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        key = f"{self.prefix}/{name}" if self.prefix else name
        where = f"s3://{self.bucket}/{key}"
        client = _client()
        try:
            client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=mime_type)
            url: str = client.generate_presigned_url(
                "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.expires_in
            )
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code, status = error.get("Code"), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            raise ProviderError(
                f"could not upload the image to {where}: {code}: {error.get('Message') or 'no message'}",
                provider_status=status,
                provider_code=code,
            ) from exc
        except BotoCoreError as exc:  # no credentials, no connection...: botocore's messages carry no secrets
            raise ProviderError(f"could not upload the image to {where}: {exc}") from exc
        return url


class S3Results:
    """``s3://bucket/prefix`` as a store of answers (:class:`gesso.cache.ResultStore`): each entry is the object
    ``<prefix>/<key>``, for the proxy's ``result_store`` shared by replicas on several hosts, or the SDK's
    ``cache=``. S3 keeps what it is given: bound it with a lifecycle rule on the prefix (gesso's
    ``result_store_max_mb`` bounds a directory only). A failure is a :class:`gesso.errors.ProviderError` naming
    the bucket and key."""

    def __init__(self, url: str) -> None:
        self._where = S3Store(url, 1)  # (the same checks of the bucket and prefix)
        self.bucket, self.prefix = self._where.bucket, self._where.prefix

    def __repr__(self) -> str:
        return f"S3Results('s3://{self.bucket}/{self.prefix}')"

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def get(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            answer = _client().get_object(Bucket=self.bucket, Key=self._key(key))
            data: bytes = answer["Body"].read()
            return data
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._failed("read", key, exc) from exc
        except Exception as exc:
            raise self._failed("read", key, exc) from exc

    def put(self, key: str, data: bytes) -> None:
        try:
            _client().put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        except Exception as exc:
            raise self._failed("write", key, exc) from exc

    def delete(self, key: str) -> None:
        try:
            _client().delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            raise self._failed("delete", key, exc) from exc

    def _failed(self, what: str, key: str, exc: Exception) -> ProviderError:
        from botocore.exceptions import ClientError

        code = exc.response.get("Error", {}).get("Code") if isinstance(exc, ClientError) else type(exc).__name__
        return ProviderError(f"could not {what} s3://{self.bucket}/{self._key(key)}: {code}")


S3 = StoreScheme(scheme="s3", title="Amazon S3", open=S3Store, results=S3Results)

_clients: dict[tuple[tuple[str, str], ...], Any] = {}
_lock = threading.Lock()


def _client() -> Any:
    """boto3's S3 client for the current AWS environment (credentials, region, endpoint), made once per
    distinct environment: making one costs tens of milliseconds, and clients are thread-safe."""
    key = tuple(sorted((name, value) for name, value in os.environ.items() if name.startswith("AWS_")))
    client = _clients.get(key)
    if client is None:
        with _lock:  # boto3 sessions are not thread-safe to create clients from
            client = _clients.get(key)
            if client is None:
                import boto3
                from botocore.config import Config

                if len(_clients) >= 8:
                    _clients.clear()
                client = boto3.session.Session().client("s3", config=Config(signature_version="s3v4"))
                _clients[key] = client
    return client


def clear_clients() -> None:
    """Forget the cached clients (tests)."""
    with _lock:
        _clients.clear()
