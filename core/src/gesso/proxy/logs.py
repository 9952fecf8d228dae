"""How ``gesso serve`` logs: one stream (stderr), as text or as JSON, the same in the parent and in every worker.

- **One configuration everywhere**: :func:`log_config` is a :func:`logging.config.dictConfig` dictionary that
  ``gesso serve`` applies in its own process and hands to uvicorn as ``log_config``, which applies it again in
  each worker process it starts; uvicorn's loggers, gesso's and any library's go through the root logger's one
  handler, with one formatter.
- **Text** (the default): ``<UTC time> <LEVEL> <logger>: <message> key=value...``. **JSON**
  (``--log-format json``, or litellm's ``JSON_LOGS=true``): one object per line, with ``timestamp``, ``level``,
  ``logger``, ``message``, ``process`` and a :class:`Line`'s fields as keys of their own.
- **Caller data cannot forge a line**: a record's fields are escaped (control characters, lone surrogates) and
  shortened, and text values holding a space, a quote or an equals sign are quoted; JSON is JSON.
- **Warnings are log lines, once each**: :func:`show_warning` replaces :func:`warnings.showwarning`, so a Python
  warning (a model's lifecycle, a model id read as another) is one ``WARNING gesso:`` line, said once per
  process; a worker leaves the ones about configured models to the parent, which said them at start-up
  (:func:`quiet_config_warnings`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

from gesso.boundary import printable

#: litellm's switch for JSON logs, read by ``gesso serve`` when ``--log-format`` is not given
ENV_JSON_LOGS = "JSON_LOGS"
FORMATS = ("text", "json")
#: the most characters of one caller-supplied value in a log line
VALUE_LIMIT = 200


def log_format(flag: str | None) -> str:
    """``--log-format`` when given, else ``json`` when ``JSON_LOGS`` is true (litellm's variable), else text."""
    if flag is not None:
        return flag
    return "json" if os.environ.get(ENV_JSON_LOGS, "").strip().lower() in ("1", "true", "yes", "on") else "text"


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z"


def _clean(text: str) -> str:
    """A message as one line: control characters and lone surrogates escaped (most messages have none)."""
    return text if text.isprintable() else printable(text, len(text) * 12)


class Line:
    """A log message with fields (``logger.info(Line("POST /v1/images/generations 200", {"request_id": ...}))``):
    as text (what any formatter shows) ``<head> name=value...``, each value escaped and quoted as needed; as JSON,
    the head as ``message`` and each field a key of its own."""

    __slots__ = ("_text", "fields", "head")

    def __init__(self, head: str, fields: dict[str, Any]) -> None:
        self.head, self.fields = head, fields
        self._text: str | None = None

    def __str__(self) -> str:  # made once (redaction reads it, then the formatter)
        if self._text is None:
            self._text = self.head + "".join(f" {name}={_text_value(value)}" for name, value in self.fields.items())
        return self._text

    def redact_with(self, redact: Callable[[str], str]) -> Line:
        """This line with ``redact`` applied to its head and to each text field (gesso.redact does so); itself
        when that changes nothing (one pass over its text)."""
        if redact(str(self)) == str(self):
            return self
        fields = {name: redact(value) if isinstance(value, str) else value for name, value in self.fields.items()}
        return Line(redact(self.head), fields)


class TextFormatter(logging.Formatter):
    """``2026-12-04T19:30:00.123Z INFO gesso.proxy: POST /v1/images/generations 200 request_id=...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname} {record.name}: {_clean(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool | int | float):
        return str(value)
    shown = _visible(value)
    return json.dumps(shown) if not shown or any(c in shown for c in ' ="') else shown


def _visible(value: Any) -> str:
    """A field's value as a log line shows it: escaped and shortened (most values need neither)."""
    if isinstance(value, str) and len(value) <= VALUE_LIMIT and value.isprintable():
        return value
    return printable(value, VALUE_LIMIT)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``timestamp``, ``level``, ``logger``, ``message``, ``process`` (its id), then a
    :class:`Line`'s fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = record.msg if isinstance(record.msg, Line) else None
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": line.head if line is not None else record.getMessage(),
            "process": record.process,
        }
        for name, value in line.fields.items() if line is not None else ():
            entry[name] = _visible(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str)


def log_config(level: str, fmt: str | None) -> dict[str, Any]:
    """The logging configuration of ``gesso serve`` and its workers (:func:`logging.config.dictConfig`'s shape,
    which uvicorn's ``log_config`` takes)."""
    formatter = {"()": f"{__name__}.{'JsonFormatter' if fmt == 'json' else 'TextFormatter'}"}
    through_root = {"handlers": [], "propagate": True}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        # uvicorn names these two when it is asked for colours (never, here)
        "formatters": {"default": formatter, "access": formatter},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "loggers": {
            "uvicorn": through_root,
            "uvicorn.error": through_root,
            "uvicorn.access": through_root,
            "alembic": {"level": "WARNING"},  # its INFO lines name each migration step; start-up sums them up
        },
        "root": {"handlers": ["default"], "level": level.upper()},
    }


def configure(level: str, fmt: str) -> None:
    """This process's logging as :func:`log_config` says, and Python warnings as log lines."""
    import logging.config

    logging.config.dictConfig(log_config(level, fmt))
    warnings.showwarning = show_warning


_shown: set[tuple[type[Warning], str]] = set()


def show_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    """A Python warning as a log line of the ``gesso`` logger, once per process (whichever code warned)."""
    text = str(message)
    if (category, text) in _shown:
        return
    _shown.add((category, text))
    logging.getLogger("gesso").warning(Line(text, {"category": category.__name__}))


def quiet_config_warnings() -> None:
    """In a worker: the warnings about configured models (Legacy or retired, an id read as another) were said
    by the parent as it checked the config; a worker does not say them again."""
    from gesso.errors import ModelIdWarning, ModelLifecycleWarning

    warnings.filterwarnings("ignore", category=ModelLifecycleWarning)
    warnings.filterwarnings("ignore", category=ModelIdWarning)


#: routes that probes and scrapers call every few seconds: their access lines are at DEBUG
QUIET_PATHS = frozenset(("/health/liveliness", "/health/liveness", "/health/readiness", "/metrics"))


class AccessLog:
    """ASGI middleware: an access line (logger ``gesso.proxy``) for each HTTP request the app does not log itself
    (the image routes log their own, with their call's fields); probes and scrapes at DEBUG. The path is logged
    without its query string (``/key/info?key=...`` carries a key)."""

    def __init__(self, app: Any, *, logged_by_app: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.logged_by_app = logged_by_app
        self.logger = logging.getLogger("gesso.proxy")

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] in self.logged_by_app:
            await self.app(scope, receive, send)
            return
        level = logging.DEBUG if scope["path"] in QUIET_PATHS else logging.INFO
        if not self.logger.isEnabledFor(level):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what a request that raised gets from Starlette's error middleware

        async def sending(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            head = f"{scope['method']} {_visible(scope['path'])} {status}"
            fields = {"status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 3)}
            self.logger.log(level, Line(head, fields))
