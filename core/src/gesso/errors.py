"""The one error hierarchy of gesso.

Every failure a caller can see is a :class:`GessoError`. Each class carries the HTTP status an
OpenAI-compatible server would answer with (``status_code``) and the OpenAI error ``type``, so the
proxy and the CLI render any error the same way. Errors are raised once, where they arise (a provider's
library errors in its transport, schema errors in params), always chaining the original exception.

This module imports nothing outside the standard library: it is safe to import from anywhere,
including ``gesso/__init__.py``. Messages never contain credentials.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at runtime: it would dominate `import gesso`
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any


class Violation:
    """One problem with one parameter: ``path`` names it (``imageGenerationConfig.cfgScale``).

    A small immutable value (equal and hashable by path and message; unpacks as ``path, message``)."""

    __slots__ = ("message", "path")
    path: str
    message: str

    def __init__(self, path: str, message: str) -> None:
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "message", message)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Violation is immutable")

    def __iter__(self) -> Iterator[str]:
        return iter((self.path, self.message))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Violation) and (self.path, self.message) == (other.path, other.message)

    def __hash__(self) -> int:
        return hash((self.path, self.message))

    def __repr__(self) -> str:
        return f"Violation(path={self.path!r}, message={self.message!r})"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class GessoError(Exception):
    """Base of every gesso error.

    Attributes: ``message`` (human-readable), ``model`` (the model id involved, if any), ``param``
    (the offending parameter, if exactly one), ``code`` (a short machine code), ``status_code``
    (OpenAI-like HTTP status) and ``type`` (OpenAI error type).
    """

    status_code: int = 500
    type: str = "api_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.param = param
        self.code = code if code is not None else self.default_code

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code})"

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequestError(GessoError):
    """The request cannot be sent as given (400). ``violations`` lists every problem found."""

    status_code = 400
    type = "invalid_request_error"

    def __init__(
        self,
        violations: list[Violation] | tuple[Violation, ...] | str,
        *,
        model: str | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        if isinstance(violations, str):
            violations = (Violation(param or "", violations),)
        self.violations = tuple(violations)
        if param is None and len(self.violations) == 1 and self.violations[0].path:
            param = self.violations[0].path
        super().__init__(_render_violations(self.violations, model), model=model, param=param, code=code)


def _render_violations(violations: tuple[Violation, ...], model: str | None) -> str:
    where = f" for model {model}" if model else ""
    if len(violations) == 1:
        return f"Invalid request{where}: {violations[0]}"
    lines = "\n".join(f"  - {v}" for v in violations)
    return f"Invalid request{where} ({len(violations)} problems):\n{lines}"


class UnknownModelError(GessoError):
    """No installed plugin owns the model id (404). ``install_hint`` names the distribution to install."""

    status_code = 404
    type = "invalid_request_error"
    default_code = "model_not_found"

    def __init__(self, message: str, *, model: str | None = None, install_hint: str | None = None) -> None:
        self.install_hint = install_hint
        super().__init__(message, model=model, param="model")


class ModelRetiredError(GessoError):
    """The provider says the model reached its end of life, or may no longer be used (404)."""

    status_code = 404
    type = "invalid_request_error"
    default_code = "model_retired"


class AuthenticationError(GessoError):
    """Credentials are missing, invalid or expired (401)."""

    status_code = 401
    type = "authentication_error"
    default_code = "invalid_credentials"


class PermissionDeniedError(GessoError):
    """The credentials are valid but not allowed to use this model (403)."""

    status_code = 403
    type = "permission_error"
    default_code = "access_denied"


class RateLimitError(GessoError):
    """The provider throttled the request, or a quota was exceeded (429). ``attempts`` counts tries made."""

    status_code = 429
    type = "rate_limit_error"
    default_code = "rate_limited"

    def __init__(self, message: str, *, model: str | None = None, attempts: int = 1, code: str | None = None):
        self.attempts = attempts
        super().__init__(message, model=model, code=code)


class ContentFilteredError(GessoError):
    """The provider's content filter blocked the prompt, an input image, or every output (400)."""

    status_code = 400
    type = "invalid_request_error"
    default_code = "content_policy_violation"


class RequestTimeoutError(GessoError):
    """The model or the connection timed out (408)."""

    status_code = 408
    type = "timeout_error"
    default_code = "timeout"


class ProviderError(GessoError):
    """The provider failed, answered something unusable, or could not be reached (502).

    ``provider_status`` and ``provider_code`` keep what the provider said, when it said anything.
    """

    status_code = 502
    type = "api_error"
    default_code = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        provider_status: int | None = None,
        provider_code: str | None = None,
    ) -> None:
        self.provider_status = provider_status
        self.provider_code = provider_code
        super().__init__(message, model=model)


class PluginError(GessoError):
    """The installed plugins cannot work together, e.g. two claim one model id (500)."""

    status_code = 500
    type = "api_error"
    default_code = "plugin_error"


class PluginConflictError(PluginError):
    """Two or more distributions claim the same model id. ``conflicts`` maps id -> distributions."""

    default_code = "plugin_conflict"

    def __init__(self, conflicts: dict[str, list[str]]) -> None:
        self.conflicts = conflicts
        lines = [f"  - {model_id}: claimed by {', '.join(dists)}" for model_id, dists in sorted(conflicts.items())]
        super().__init__(
            "Installed gesso plugins claim the same model ids; uninstall one of each pair or restrict "
            "loading with GESSO_PLUGINS:\n" + "\n".join(lines)
        )


class PluginHookError(ProviderError):
    """A plugin's hook failed the call (502): it raised an exception that is no :class:`GessoError`, answered
    with the wrong type, or was still running past the call's deadline. ``plugin`` names the plugin (its
    distribution, or the name it was registered under; ``None`` when it cannot be told) and ``hook`` the hook."""

    default_code = "plugin_failed"

    def __init__(self, message: str, *, plugin: str | None, hook: str, model: str | None = None) -> None:
        self.plugin = plugin
        self.hook = hook
        super().__init__(message, model=model)


class ModelLifecycleWarning(UserWarning):
    """Warned once per process and model when a Legacy or end-of-life model is used."""


class ModelIdWarning(UserWarning):
    """The model id as written was read as another, known id (e.g. a provider prefix written twice)."""


__all__ = [
    "AuthenticationError",
    "ContentFilteredError",
    "GessoError",
    "InvalidRequestError",
    "ModelIdWarning",
    "ModelLifecycleWarning",
    "ModelRetiredError",
    "PermissionDeniedError",
    "PluginConflictError",
    "PluginError",
    "PluginHookError",
    "ProviderError",
    "RateLimitError",
    "RequestTimeoutError",
    "UnknownModelError",
    "Violation",
]
