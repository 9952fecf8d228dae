"""Keep secrets and image data out of every log line and message, whatever the host's logging config.

Provider libraries log request headers (API keys, session tokens) and request bodies (megabytes of base64)
at DEBUG. gesso cannot rely on how the host configured logging, so it redacts where log records are made:
:func:`install` wraps the process's log record factory, and every record of the loggers gesso drives
(``gesso`` and each provider's :attr:`~gesso.provider.Provider.loggers`) has its message rewritten before
any handler or filter sees it. Records are only made for enabled levels, so this costs nothing while DEBUG
logging is off.

What is redacted: every secret gesso was given (:func:`remember`), credential header values
(``Authorization``, session tokens), credential fields by name wherever a library logs them (STS's XML
``<SecretAccessKey>``, the instance and container metadata's JSON ``"Token"``, ``aws_secret_access_key=...``:
values gesso was never given, such as the keys an assumed role gets), ``user:password@`` in URLs, and base64
runs longer than 64 characters.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable

_loggers: tuple[str, ...] = ("gesso",)
#: a base64 run longer than this many characters is image data (or a key): it is shortened
MAX_BASE64 = 64
_MAX_SECRETS = 256
#: shorter values are not treated as secrets: redacting them would mangle ordinary words in messages
MIN_SECRET = 8

_BASE64_RE = re.compile(rf"[A-Za-z0-9+/]{{{MAX_BASE64 + 1},}}={{0,2}}")
_HEADER_RE = re.compile(
    r"(?i)((?:authorization|x-[a-z-]*security-token)['\"]?\s*[:=]\s*b?['\"]?)(?:bearer\s+)?[^'\",}\s]+"
)
_USERINFO_RE = re.compile(r"(?<=://)[^/@\s'\"]*@")
#: provider libraries log a token service's answers (an assumed role's secret key and session token) at DEBUG
_XML_FIELD_RE = re.compile(r"(?i)(<(?:SecretAccessKey|SecretKey|SessionToken)>)[^<]*")
#: "SecretAccessKey": "...", aws_session_token=..., "Token": "..." (quoted only), as JSON, Python reprs or kwargs
_FIELD_RE = re.compile(
    r"""(?i)((?<![\w-])['"]?(?:aws_)?(?:secret_?access_?key|secret_?key|session_?token)['"]?\s*[:=]\s*b?['"]?"""
    r"""|['"]token['"]\s*:\s*b?['"])(?!b['"])[^'",}\s<)]+"""
)

_secrets: dict[str, None] = {}
_lock = threading.Lock()
_installed = False


def remember(values: Iterable[str | None]) -> None:
    """Secrets to remove from every later log line and message (API keys, secret keys, tokens)."""
    fresh = [v for v in values if isinstance(v, str) and len(v) >= MIN_SECRET and v not in _secrets]
    if not fresh:
        return
    with _lock:
        for value in fresh:
            _secrets[value] = None
        while len(_secrets) > _MAX_SECRETS:
            del _secrets[next(iter(_secrets))]


def redact(text: str) -> str:
    """``text`` without known secrets, credential header values, URL passwords or long base64 runs."""
    for secret in list(_secrets):
        if secret in text:
            text = text.replace(secret, "<redacted>")
    text = _HEADER_RE.sub(r"\1<redacted>", text)
    text = _XML_FIELD_RE.sub(r"\1<redacted>", text)
    text = _FIELD_RE.sub(r"\1<redacted>", text)
    text = _USERINFO_RE.sub("***@", text)
    return _BASE64_RE.sub(lambda m: f"<{len(m.group())} base64 chars>", text)


def install(loggers: Iterable[str] = ()) -> None:
    """Redact every log record of ``gesso`` and of ``loggers`` (and their children) from now on (the record
    factory is wrapped once per process; later calls only add loggers)."""
    global _installed, _loggers
    wanted = tuple(name for name in loggers if name not in _loggers)
    if _installed and not wanted:
        return
    with _lock:
        _loggers = (*_loggers, *(name for name in wanted if name not in _loggers))
        if _installed:
            return
        make = logging.getLogRecordFactory()

        def factory(*args: object, **kwargs: object) -> logging.LogRecord:
            record = make(*args, **kwargs)
            if record.name.startswith(_loggers):
                _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True


def _redact_record(record: logging.LogRecord) -> None:
    redact_with = getattr(record.msg, "redact_with", None)  # a message of parts (gesso.proxy.logs.Line): each part
    if callable(redact_with) and not record.args:
        record.msg = redact_with(redact)
        return
    try:
        message = record.getMessage()
    except Exception:  # a record whose arguments do not fit its format: leave it to logging to report
        return
    cleaned = redact(message)
    if cleaned != message:
        record.msg, record.args = cleaned, ()
