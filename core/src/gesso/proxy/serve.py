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
import sys
from typing import Any

ENV_CONFIG = "GESSO_PROXY_CONFIG"
ENV_OVERRIDES = "GESSO_PROXY_OVERRIDES"


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
    from gesso.proxy import workers

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
        print(f"gesso: error: {args.config}: {exc}", file=sys.stderr)
        return 2
    for warning in config.warnings:
        print(f"gesso: warning: {warning}", file=sys.stderr)
    print(f"gesso: max concurrency {limit} calls in flight per process (set by {limit_source})", file=sys.stderr)
    if too_few_files:
        print(f"gesso: warning: {too_few_files}", file=sys.stderr)
    if config.database_url:
        try:
            from gesso.proxy import store

            store.upgrade(config.database_url)
        except Exception as exc:  # the database is unreachable, or its schema is not one gesso knows
            print(f"gesso: error: general_settings.database_url: cannot prepare the database: {exc}", file=sys.stderr)
            return 2
    if config.master_key is None and not loopback(args.host):
        if not args.allow_unauthenticated:
            print(f"gesso: error: {args.host} is not a loopback address and the config has no "
                  "general_settings.master_key: set one, or pass --allow-unauthenticated", file=sys.stderr)  # fmt: skip
            return 2
        print(f"gesso: warning: serving {args.host} without a master key: anyone who reaches it spends",
              file=sys.stderr)  # fmt: skip
    with contextlib.ExitStack() as stack:
        overrides = emulators(config, stack) if args.emulator else {}
        _serve(args, config, overrides)
    return 0


def emulators(config: Any, stack: contextlib.ExitStack) -> dict[str, dict[str, Any]]:
    """Each deployment's provider emulator, running while the proxy does; the options that point it there."""
    from gesso import plugins

    registry = plugins.get_registry()
    overrides = {}
    for deployment in config.deployments:
        params = dict(deployment.params)
        overrides[deployment.id] = dict(stack.enter_context(registry.emulate(params.pop("model"), params)))
    return overrides


def tune_gc() -> None:
    """Fewer, cheaper garbage collections in the proxy process: thousands of calls in flight hold many
    objects, and Python's default thresholds run a full collection over all of them every few thousand
    allocations. Measured by bench/proxy.py: about 20% more requests/s, and 0.25 s less on a 2,000-call
    burst. What startup loaded (plugins, schemas) is frozen out of every collection."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _serve(args: argparse.Namespace, config: Any, overrides: dict[str, dict[str, Any]]) -> None:
    import uvicorn

    from gesso.proxy.guard import GuardedHttpToolsProtocol

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    # the protocol: uvicorn's httptools one with a size limit and a deadline for each request's headers
    options: dict[str, Any] = {"host": args.host, "port": args.port, "log_level": args.log_level,
                               "access_log": False, "timeout_graceful_shutdown": 5,
                               "http": GuardedHttpToolsProtocol}  # fmt: skip
    print(f"gesso: serving {len(config.model_names)} model names on http://{args.host}:{args.port}", file=sys.stderr)
    if args.workers > 1:
        os.environ[ENV_CONFIG] = os.path.abspath(args.config)
        os.environ[ENV_OVERRIDES] = json.dumps(overrides)
        from gesso.proxy import workers

        workers.mark_parent()
        with workers.shared_metrics():  # one /metrics over every worker, whichever answers
            uvicorn.run("gesso.proxy.serve:factory", factory=True, workers=args.workers, **options)
        workers.stop_helpers()
        return
    from gesso.proxy.app import build_app

    app = build_app(config, overrides)
    tune_gc()
    uvicorn.run(app, **options)


def factory() -> Any:
    """The app of one worker process (``--workers``): the config from the environment the parent set."""
    from gesso.proxy import config as proxy_config
    from gesso.proxy import workers
    from gesso.proxy.app import build_app

    workers.follow_parent()
    config = proxy_config.load(os.environ[ENV_CONFIG])
    app = build_app(config, json.loads(os.environ.get(ENV_OVERRIDES) or "{}"))
    tune_gc()
    return app
