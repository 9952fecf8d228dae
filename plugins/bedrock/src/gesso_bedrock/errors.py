"""Map botocore's exceptions to gesso's error hierarchy, once, at the transport boundary."""

from __future__ import annotations

from typing import Any

from gesso import errors
from gesso.redact import redact

_AUTH_CODES = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "ExpiredTokenException",
        "ExpiredToken",
        "InvalidClientTokenId",
        "MissingAuthenticationTokenException",
        "MissingAuthenticationToken",
        "UnauthorizedException",
    }
)
_RATE_CODES = frozenset(
    {"ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException", "ModelNotReadyException"}
)
NO_CREDENTIALS = (
    "No AWS credentials found. Pass aws_access_key_id and aws_secret_access_key, or aws_profile_name, "
    "or configure the default chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws, an instance role)"
)
_RETIRED_MARKERS = ("end of its life", "marked by provider as Legacy")
#: Bedrock's content filters, and a guardrail intervening (as the emulator words it)
_CONTENT_FILTER_MARKERS = ("blocked by our content filters", "blocked by the guardrail")


def map_client_error(exc: Any, *, model: str) -> errors.GessoError:
    """Turn a botocore ``ClientError`` into the matching :class:`gesso.errors.GessoError`."""
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {}) or {}
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    return map_error(
        str(error.get("Code") or ""), str(error.get("Message") or "").strip() or str(exc), status, model=model
    )


def map_error(code: str, message: str, status: int | None, *, model: str) -> errors.GessoError:
    """What Bedrock's error ``code`` (with its ``message`` and HTTP ``status``) means to a gesso caller."""
    message = redact(message)
    said = f"Bedrock {code or status}: {message}"
    if code == "ValidationException":
        if any(marker in message for marker in _CONTENT_FILTER_MARKERS) or message == "invalid_prompts":
            return errors.ContentFilteredError(said, model=model)
        return errors.InvalidRequestError(said, model=model, code="provider_validation")
    if code in _AUTH_CODES:
        return errors.AuthenticationError(said, model=model)
    if code == "AccessDeniedException":
        return errors.PermissionDeniedError(said, model=model)
    if code == "ResourceNotFoundException":
        if any(marker in message for marker in _RETIRED_MARKERS):
            return errors.ModelRetiredError(said, model=model)
        return errors.UnknownModelError(said, model=model)
    if code in _RATE_CODES:
        # a quota is not a passing condition: it gets its own code so the transport does not retry it
        quota = "quota_exceeded" if code == "ServiceQuotaExceededException" else None
        return errors.RateLimitError(said, model=model, code=quota)
    if code == "ModelTimeoutException":
        return errors.RequestTimeoutError(said, model=model)
    return errors.ProviderError(said, model=model, provider_status=status, provider_code=code or None)


def map_botocore_error(exc: Exception, *, model: str) -> errors.GessoError:
    """Map botocore's non-HTTP errors (credentials, region, connection, timeouts)."""
    from botocore import exceptions as bx

    said = redact(str(exc))  # botocore's messages quote endpoint URLs, which may carry a password

    if isinstance(exc, bx.NoCredentialsError):
        return errors.AuthenticationError(NO_CREDENTIALS, model=model)
    if isinstance(exc, bx.PartialCredentialsError):
        return errors.AuthenticationError(f"Incomplete AWS credentials: {said}", model=model)
    if isinstance(exc, bx.ProfileNotFound):
        return errors.InvalidRequestError(
            f"the AWS profile named in aws_profile_name (or AWS_PROFILE) was not found: {said}",
            model=model,
            param="aws_profile_name",
        )
    if isinstance(exc, bx.NoRegionError):
        return errors.InvalidRequestError(
            "no AWS region given: pass aws_region_name, set AWS_REGION or AWS_DEFAULT_REGION, "
            "or set a region in your AWS profile",
            model=model,
            param="aws_region_name",
        )
    if isinstance(exc, (bx.ReadTimeoutError, bx.ConnectTimeoutError)):
        return errors.RequestTimeoutError(f"Bedrock did not answer in time: {said}", model=model)
    if isinstance(exc, (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ConnectionError)):
        return errors.ProviderError(f"Could not reach Bedrock: {said}", model=model)
    if isinstance(exc, bx.ParamValidationError):
        return errors.InvalidRequestError(str(exc), model=model, param="model_id")
    return errors.ProviderError(f"Bedrock call failed: {type(exc).__name__}: {said}", model=model)
