"""``gesso serve``: load and check the config, start the emulators if asked, and run the app on uvicorn.

Without ``general_settings.master_key`` the proxy serves without auth only on a loopback address; any other
bind refuses to start unless ``--allow-unauthenticated`` is given (and then warns).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
import warnings
from typing import Any

ENV_CONFIG = "GESSO_PROXY_CONFIG"
#: the file (in the workers' private directory) of each deployment's locked options (the emulators')
ENV_OVERRIDES = "GESSO_PROXY_OVERRIDES"
OVERRIDES_FILE = "overrides.json"
log = logging.getLogger("gesso")


def add_command(sub: Any) -> None:
    serve = sub.add_parser("serve", help="run the OpenAI-compatible proxy (a litellm config works as it is)")
    serve.add_argument("--config", required=True, help="the config file (litellm's config.yaml format)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    serve.add_argument("--port", type=int, default=4000, help="port (default 4000)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    serve.add_argument("--max-concurrency", type=_positive, metavar="N", help="calls in flight per worker "
                       "process; more wait (default: GESSO_MAX_CONCURRENCY, else general_settings.max_concurrency, "
                       "else 4096)")  # fmt: skip
    serve.add_argument("--emulator", action="store_true", help="start the providers' emulators and point every "
                       "deployment at them")  # fmt: skip
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback address without a master key (anyone who can reach it spends)",
    )
    serve.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    serve.add_argument("--log-format", choices=("text", "json"), help="text lines with a UTC timestamp, or one "
                       "JSON object per line (default: json when JSON_LOGS=true, else text)")  # fmt: skip
    serve.set_defaults(handler=run)


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, not {text!r}")
    return int(text)


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn  # noqa: F401
        import yaml  # noqa: F401
    except ImportError:
        print("gesso: error: the proxy needs its extra: pip install 'gesso-core[proxy]'", file=sys.stderr)
        return 2
    from gesso.proxy import config as proxy_config
    from gesso.proxy import logs, workers

    args.log_format = logs.log_format(args.log_format)
    logs.configure(args.log_level, args.log_format)  # before the config's check, whose warnings are log lines
    # the metrics directory is gesso serve's own (made fresh for workers): one left in the environment, with
    # another run's counts in it, is never read
    os.environ.pop(workers.ENV_METRICS_DIR, None)
    try:
        config = proxy_config.load(args.config)
        # exported before the check, which loads the SDK and the providers: they read the limit once, on import
        limit, limit_source = workers.max_concurrency(args.max_concurrency, config.max_concurrency)
        too_few_files = workers.apply_concurrency(limit)
        proxy_config.check(config)
    except (proxy_config.ConfigError, workers.SettingError) as exc:
        return _refuse(args, f"{args.config}: {exc}")
    for warning in config.warnings:
        log.warning("%s", warning)
    if too_few_files:
        log.warning("%s", too_few_files)
    if config.master_key is None and not loopback(args.host):
        if not args.allow_unauthenticated:
            return _refuse(args, f"{args.host} is not a loopback address and the config has no "
                           "general_settings.master_key: set one, or pass --allow-unauthenticated")  # fmt: skip
        log.warning("serving %s without a master key: anyone who reaches it spends", args.host)
    assert config.database_url is not None  # (the default is a SQLite file beside the config)
    try:
        database = _database(config.database_url, default="database_url" not in config.general)
    except Exception as exc:  # the database is unreachable, or its schema is not one gesso knows
        return _refuse(args, f"general_settings.database_url: cannot prepare the database: {exc}")
    with contextlib.ExitStack() as stack:
        emulated = Emulators(stack) if args.emulator else None
        overrides = emulated.overrides(config) if emulated is not None else {}
        _summary(args, config, database, (limit, limit_source))
        _serve(args, config, overrides, Reload(args.config, emulated))
    return 0


def _refuse(args: argparse.Namespace, message: str) -> int:
    """Refuse to start: a command-line error (``gesso: error: ...``), or a JSON log line with JSON logs."""
    if args.log_format == "json":
        log.error("%s", message)
    else:
        print(f"gesso: error: {message}", file=sys.stderr)
    return 2


def _database(url: str, *, default: bool) -> str:
    """Prepare the database (its schema migrated to the newest); what start-up says of it."""
    from gesso.proxy import store

    path = _sqlite_path(url)
    existed = path is None or os.path.exists(path)
    before = store.schema_revision(url)
    store.upgrade(url)
    after = store.schema_revision(url)
    where = store.redacted(url) + (f" (the file {path}{'' if existed else ', created now'})" if path else "")
    if default:
        where += ", the default (no general_settings.database_url: a SQLite file beside the config)"
    migrated = "at the newest" if before == after else f"migrated from {before or 'none'} to the newest"
    return f"{where}, schema {migrated} revision ({after})"


def _sqlite_path(url: str) -> str | None:
    """The file of a SQLite URL (``sqlite:////abs`` or ``sqlite:///rel``); None for another database."""
    if not url.startswith("sqlite:///") or url[len("sqlite:///") :] in ("", ":memory:"):
        return None
    return os.path.abspath(url[len("sqlite:///") :].split("?", 1)[0])


def _summary(args: argparse.Namespace, config: Any, database: str, limit: tuple[int, str]) -> None:
    """What start-up says it is about to do, one line each: how callers are authenticated, where calls go, the
    database, the processes and their limit, each model name with its deployments."""
    if config.master_key is not None:
        auth = "on (general_settings.master_key, and the virtual keys it makes)"
    elif loopback(args.host):
        auth = f"off (no general_settings.master_key; {args.host} is a loopback address: only this machine reaches it)"
    else:
        auth = f"off (no general_settings.master_key; --allow-unauthenticated on {args.host})"
    log.info("authentication: %s", auth)
    if args.emulator:
        log.info("providers: emulated (--emulator): every deployment answers from a local emulator; nothing is paid")
    else:
        log.info("providers: real: each call goes to its deployment's provider and is paid")
    log.info("database: %s", database)
    log.info("workers: %d process%s", args.workers, "" if args.workers == 1 else "es")
    log.info("max concurrency %d calls in flight per process (set by %s)", *limit)
    for name in config.model_names:
        deployments = [d for d in config.deployments if d.model_name == name]
        shown = ", ".join(f"{d.id} ({d.model})" for d in deployments)
        log.info("model %s: %d deployment%s: %s", name, len(deployments), "" if len(deployments) == 1 else "s", shown)
        log.info("model %s: lifecycle: %s", name, ", ".join(f"{d.id} {_stage(d)}" for d in deployments))


def _stage(deployment: Any) -> str:
    """Where a deployment's model stands in its lifecycle, for the start-up summary."""
    from gesso.proxy import config as proxy_config

    stage = proxy_config.lifecycle(deployment)
    if stage is None:
        return "lifecycle unknown"
    when = f", end of life {stage.end_of_life}" if stage.end_of_life else ""
    if proxy_config.past_end_of_life(stage):
        return f"{stage.status}{when} passed: tried after the others"
    return f"{stage.status}{when}"


class Emulators:
    """The providers' emulators of the deployments (``--emulator``), running while the proxy does; started for
    each deployment as it appears (at start, or in a reloaded config whose deployment is new or changed)."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.stack = stack
        self.running: dict[str, dict[str, Any]] = {}

    def overrides(self, config: Any) -> dict[str, dict[str, Any]]:
        """The options that point each deployment of ``config`` at its emulator."""
        from gesso import plugins

        registry = plugins.get_registry()
        found = {}
        for deployment in config.deployments:
            params = dict(deployment.params)
            same = json.dumps([deployment.id, params], sort_keys=True, default=repr)
            if same not in self.running:
                self.running[same] = dict(self.stack.enter_context(registry.emulate(params.pop("model"), params)))
            found[deployment.id] = self.running[same]
        return found


class Reload:
    """What a reload (SIGHUP) reads: the config file checked as at start, with its warnings, and each deployment's
    emulator options under ``--emulator``; a :class:`~gesso.proxy.config.ConfigError` when it is not valid."""

    def __init__(self, path: str, emulated: Emulators | None) -> None:
        self.path = path
        self.emulated = emulated

    def __call__(self) -> tuple[Any, dict[str, dict[str, Any]]]:
        from gesso.proxy import config as proxy_config

        config = proxy_config.load(self.path)
        proxy_config.check(config)
        for warning in config.warnings:
            log.warning("%s", warning)
        return config, self.emulated.overrides(config) if self.emulated is not None else {}


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in the proxy process: thousands of calls in flight hold many
    objects, and Python's default thresholds run a full collection over all of them every few thousand
    allocations. Measured by bench/proxy.py: about 20% more requests/s, and 0.25 s less on a 2,000-call
    burst. What startup loaded (plugins, schemas) is frozen out of every collection."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _serve(
    args: argparse.Namespace, config: Any, overrides: dict[str, dict[str, Any]], reload: Reload | None = None
) -> None:
    import uvicorn

    from gesso.proxy import logs
    from gesso.proxy.guard import GuardedHttpToolsProtocol

    # the protocol: uvicorn's httptools one with a size limit and a deadline for each request's headers; the
    # logging: gesso's, applied again by uvicorn in each worker process
    # the graceful stop: gesso's own (gesso.proxy.lifecycle) cancels what is left at graceful_timeout; uvicorn's
    # is a backstop after it
    log_format = getattr(args, "log_format", None)  # (None: text)
    options: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": args.log_level,
                               "access_log": False, "timeout_graceful_shutdown": config.graceful_timeout + 15,
                               "http": GuardedHttpToolsProtocol,
                               "log_config": logs.log_config(args.log_level, log_format)}  # fmt: skip
    log.info("serving %d model names on http://%s:%d", len(config.model_names), args.host, args.port)
    # uvicorn stops gracefully on SIGTERM, then raises it again for the handler it found: this one, so that a
    # proxy stopped as asked exits 0 (as a process manager expects) rather than by the signal
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app's reload handler is in place (its start-up)
    if args.workers > 1:
        from gesso.proxy import workers

        os.environ[ENV_CONFIG] = os.path.abspath(args.config)
        workers.mark_parent()
        with workers.shared_metrics() as shared:  # one /metrics over every worker, whichever answers
            overrides_file = os.path.join(shared, OVERRIDES_FILE)
            _write_json(overrides_file, overrides)
            os.environ[ENV_OVERRIDES] = overrides_file
            uvicorn_config = uvicorn.Config("gesso.proxy.serve:factory", factory=True, workers=args.workers, **options)
            checked = _ParentReload(reload or Reload(args.config, None), config, overrides_file)
            from gesso.proxy.supervisor import Supervisor

            Supervisor(uvicorn_config, reload=checked).run()
        workers.stop_helpers()
        return
    from gesso.proxy.app import build_app

    app = build_app(config, overrides, reloader=reload)
    tune_gc()
    uvicorn.run(app, **options)


class _ParentReload:
    """A reload in ``gesso serve``'s parent, before its workers are told (SIGHUP): the config checked here first,
    so an invalid one is refused once, with the errors of a start; the emulators' options written for them."""

    def __init__(self, reload: Reload, serving: Any, overrides_file: str) -> None:
        self.reload, self.serving, self.overrides_file = reload, serving, overrides_file

    def __call__(self) -> bool:
        from gesso.proxy.lifecycle import replacement

        found = replacement(self.reload, self.serving)
        if found is None:  # the workers keep serving the config they have
            return False
        config, overrides = found
        _write_json(self.overrides_file, overrides)
        self.serving = config
        log.info("reloading: %d model names, %d deployments; telling the workers", len(config.model_names),
                 len(config.deployments))  # fmt: skip
        return True


def _write_json(path: str, value: Any) -> None:
    """``value`` as JSON at ``path``, replaced whole (a reader never sees half of it)."""
    with open(path + ".new", "w") as file:
        json.dump(value, file)
    os.replace(path + ".new", path)


def _stopped(signum: int, frame: Any) -> None:
    """SIGTERM, raised again by uvicorn once it has stopped gracefully: nothing left to do."""


def factory() -> Any:
    """The app of one worker process (``--workers``): the config from the environment the parent set."""
    from gesso.proxy import config as proxy_config
    from gesso.proxy import logs, workers
    from gesso.proxy.app import build_app

    workers.follow_parent()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the app's reload handler is in place (its start-up)
    warnings.showwarning = logs.show_warning  # (uvicorn has applied gesso's logging configuration here)
    logs.quiet_config_warnings()
    config = proxy_config.load(os.environ[ENV_CONFIG])
    app = build_app(config, _read_overrides(), reloader=_worker_reload)
    tune_gc()
    return app


def _read_overrides() -> dict[str, dict[str, Any]]:
    with open(os.environ[ENV_OVERRIDES]) as file:
        found: dict[str, dict[str, Any]] = json.load(file)
    return found


def _worker_reload() -> tuple[Any, dict[str, dict[str, Any]]]:
    """A worker's reload: the config its parent has just checked (checked again: the file may have changed
    since), and the emulators' options the parent wrote."""
    from gesso.proxy import config as proxy_config

    config = proxy_config.load(os.environ[ENV_CONFIG])
    proxy_config.check(config)
    return config, _read_overrides()
