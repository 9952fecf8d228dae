"""The admin's commands: ``gesso keys generate|list|info|delete|block|unblock`` against a running proxy (its key
API, with the master key), and ``gesso db upgrade`` (the proxy's schema migrations, without starting it)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

MASTER_KEY_ENV = ("GESSO_MASTER_KEY", "LITELLM_MASTER_KEY")


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage a running proxy's virtual keys (needs its master key)")
    keys.add_argument("--url", default=os.environ.get("GESSO_PROXY_URL", "http://127.0.0.1:4000"),
                      help="the proxy (default $GESSO_PROXY_URL or http://127.0.0.1:4000)")  # fmt: skip
    keys.add_argument("--master-key", help="default: $GESSO_MASTER_KEY or $LITELLM_MASTER_KEY")
    actions = keys.add_subparsers(dest="action", required=True)
    gen = actions.add_parser("generate", help="make a key (its plaintext is shown once)")
    gen.add_argument("--alias", dest="key_alias")
    gen.add_argument("--models", type=lambda v: [m for m in v.split(",") if m], help="model names, comma-separated")
    gen.add_argument("--max-budget", type=float, help="USD")
    gen.add_argument("--budget-duration", help="reset period: 1h, 1d, 30d, 1mo...")
    gen.add_argument("--duration", help="lifetime: 30d...")
    gen.add_argument("--rpm-limit", type=int)
    gen.add_argument("--metadata", type=json.loads, help="a JSON object")
    actions.add_parser("list", help="every key (hashes)")
    info = actions.add_parser("info", help="one key's settings and spend")
    info.add_argument("key", help="the key, its hash or its alias")
    delete = actions.add_parser("delete", help="delete keys")
    delete.add_argument("keys", nargs="+", help="keys, hashes or aliases")
    for action, what in (
        ("block", "refuse a key (401 key_blocked) until it is unblocked"),
        ("unblock", "let a blocked key in again"),
    ):
        blocking = actions.add_parser(action, help=what)
        blocking.add_argument("key", help="the key, its hash or its alias")
    keys.set_defaults(handler=_keys)

    db = sub.add_parser("db", help="the proxy's database")
    db_actions = db.add_subparsers(dest="action", required=True)
    upgrade = db_actions.add_parser("upgrade", help="apply the schema migrations")
    where = upgrade.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the proxy's config (its general_settings.database_url, or gesso.db beside it)")
    where.add_argument("--database-url", help="sqlite:///PATH or postgresql://...")
    db.set_defaults(handler=_db)


def _keys(args: argparse.Namespace) -> int:
    master = args.master_key or next((os.environ[n] for n in MASTER_KEY_ENV if os.environ.get(n)), None)
    if not master:
        print("gesso: error: give the proxy's master key: --master-key or $GESSO_MASTER_KEY", file=sys.stderr)
        return 2
    if args.action == "generate":
        fields = ("key_alias", "models", "max_budget", "budget_duration", "duration", "rpm_limit", "metadata")
        body = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
        answer = _call(args.url, "POST", "/key/generate", master, body)
    elif args.action == "list":
        answer = _call(args.url, "GET", "/key/list?return_full_object=true&size=100", master)
    elif args.action == "info":
        answer = _call(args.url, "GET", "/key/info?" + urllib.parse.urlencode({"key": args.key}), master)
    elif args.action in ("block", "unblock"):
        answer = _call(args.url, "POST", f"/key/{args.action}", master, {"key": args.key})
    else:
        answer = _call(args.url, "POST", "/key/delete", master, {"keys": args.keys})
    if isinstance(answer, int):
        return answer
    print(json.dumps(answer, indent=2))
    return 0


def _call(url: str, method: str, path: str, master: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url.rstrip("/") + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {master}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.load(answer)
    except urllib.error.HTTPError as exc:
        try:
            message = json.load(exc)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = exc.reason
        print(f"gesso: error: {exc.code}: {message}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"gesso: error: cannot reach the proxy at {url}: {getattr(exc, 'reason', exc)}", file=sys.stderr)
        return 1


def _db(args: argparse.Namespace) -> int:
    from gesso.proxy import config as proxy_config
    from gesso.proxy import store

    url = args.database_url
    if args.config:
        try:
            url = proxy_config.load(args.config).database_url
        except proxy_config.ConfigError as exc:
            print(f"gesso: error: {args.config}: {exc}", file=sys.stderr)
            return 2
    try:
        store.upgrade(url)
    except Exception as exc:  # unreachable database, or a schema gesso does not know
        print(f"gesso: error: cannot upgrade the database: {exc}", file=sys.stderr)
        return 1
    print(f"gesso: the database is at the newest schema ({store.redacted(url)})")
    return 0
