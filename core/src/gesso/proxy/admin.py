"""The admin's commands against a running proxy (its management API, with the master key): ``gesso keys
generate|list|info|delete|block|unblock``, ``gesso teams new|list|info|update|delete|block|unblock|add-member|
update-member|remove-member``, ``gesso users new|list|info|update|delete`` and ``gesso customers new|list|info|
update|delete|block|unblock``; ``gesso cache purge [--model M] [--older-than 7d]``; and ``gesso db upgrade``
(the proxy's schema migrations, without starting it)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

MASTER_KEY_ENV = ("GESSO_MASTER_KEY", "LITELLM_MASTER_KEY")


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("GESSO_PROXY_URL", "http://127.0.0.1:4000"),
                        help="the proxy (default $GESSO_PROXY_URL or http://127.0.0.1:4000)")  # fmt: skip
    parser.add_argument("--master-key", help="default: $GESSO_MASTER_KEY or $LITELLM_MASTER_KEY")


def _models(value: str) -> list[str]:
    return [m for m in value.split(",") if m]


def _limits(parser: argparse.ArgumentParser, *, models: bool = True) -> None:
    """The budget and limit flags every entity takes (and a model list)."""
    if models:
        parser.add_argument("--models", type=_models, help="model names, comma-separated")
    parser.add_argument("--max-budget", type=float, help="USD")
    parser.add_argument("--budget-duration", help="reset period: 1h, 1d, 30d, 1mo...")
    parser.add_argument("--rpm-limit", type=int, help="requests per minute")
    parser.add_argument("--ipm-limit", type=int, help="images per minute")
    parser.add_argument("--metadata", type=json.loads, help="a JSON object")


def add_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="manage a running proxy's virtual keys (needs its master key)")
    _connection(keys)
    actions = keys.add_subparsers(dest="action", required=True)
    gen = actions.add_parser("generate", help="make a key (its plaintext is shown once)")
    gen.add_argument("--alias", dest="key_alias")
    gen.add_argument("--duration", help="lifetime: 30d...")
    gen.add_argument("--team", dest="team_id", help="the team it belongs to")
    gen.add_argument("--user", dest="user_id", help="its owner (an internal user)")
    _limits(gen)
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

    teams = sub.add_parser("teams", help="manage a running proxy's teams (needs its master key)")
    _connection(teams)
    actions = teams.add_subparsers(dest="action", required=True)
    for action in ("new", "update"):
        made = actions.add_parser(action, help="make a team" if action == "new" else "change a team")
        made.add_argument("team_id")
        made.add_argument("--alias", dest="team_alias")
        if action == "new":
            made.add_argument("--member", action="append", default=[], metavar="USER[:ROLE]",
                              help="a member (role admin or user; default user); repeat for more")  # fmt: skip
        _limits(made)
    actions.add_parser("list", help="every team")
    for action, what in (("info", "one team, its members and keys"), ("block", "refuse its keys (401)"),
                         ("unblock", "let its keys in again")):  # fmt: skip
        actions.add_parser(action, help=what).add_argument("team_id")
    actions.add_parser("delete", help="delete teams and their keys").add_argument("team_ids", nargs="+")
    for action, what in (("add-member", "add a member"), ("update-member", "change a member's role or budget")):
        member = actions.add_parser(action, help=what)
        member.add_argument("team_id")
        member.add_argument("user_id")
        member.add_argument("--role", choices=("admin", "user"))
        member.add_argument("--max-budget", dest="max_budget_in_team", type=float, help="USD, in this team")
    removing = actions.add_parser("remove-member", help="remove a member")
    removing.add_argument("team_id")
    removing.add_argument("user_id")
    teams.set_defaults(handler=_teams)

    users = sub.add_parser("users", help="manage a running proxy's internal users (needs its master key)")
    _connection(users)
    actions = users.add_subparsers(dest="action", required=True)
    for action in ("new", "update"):
        made = actions.add_parser(action, help="make a user (and a key of theirs)" if action == "new" else
                                  "change a user")  # fmt: skip
        made.add_argument("user_id")
        made.add_argument("--email", dest="user_email")
        made.add_argument("--role", dest="user_role", choices=("proxy_admin", "internal_user", "internal_user_viewer"))
        if action == "new":
            made.add_argument("--team", dest="teams", action="append", help="a team to join; repeat for more")
            made.add_argument("--no-key", dest="auto_create_key", action="store_false", default=None,
                              help="make no key for them")  # fmt: skip
        _limits(made)
    actions.add_parser("list", help="every user")
    actions.add_parser("info", help="one user and their keys").add_argument("user_id")
    actions.add_parser("delete", help="delete users and their keys").add_argument("user_ids", nargs="+")
    users.set_defaults(handler=_users)

    customers = sub.add_parser("customers", help="manage a running proxy's end customers (the request's user)")
    _connection(customers)
    actions = customers.add_subparsers(dest="action", required=True)
    for action in ("new", "update"):
        made = actions.add_parser(action, help="make a customer" if action == "new" else "change a customer")
        made.add_argument("user_id")
        made.add_argument("--alias")
        _limits(made, models=False)
    actions.add_parser("list", help="every customer")
    actions.add_parser("info", help="one customer").add_argument("user_id")
    for action, what in (("delete", "delete customers"), ("block", "refuse their requests (403)"),
                         ("unblock", "let them in again")):  # fmt: skip
        actions.add_parser(action, help=what).add_argument("user_ids", nargs="+")
    customers.set_defaults(handler=_customers)

    cache = sub.add_parser("cache", help="a running proxy's exact cache (needs its master key)")
    _connection(cache)
    cache_actions = cache.add_subparsers(dest="action", required=True)
    purge = cache_actions.add_parser("purge", help="remove entries: all, or those of --model older than --older-than")
    purge.add_argument("--model", help="a model name")
    purge.add_argument("--older-than", help="made more than this long ago: 30m, 24h, 7d...")
    cache.set_defaults(handler=_cache)

    db = sub.add_parser("db", help="the proxy's database")
    db_actions = db.add_subparsers(dest="action", required=True)
    upgrade = db_actions.add_parser("upgrade", help="apply the schema migrations")
    where = upgrade.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", help="the proxy's config (its general_settings.database_url, or gesso.db beside it)")
    where.add_argument("--database-url", help="sqlite:///PATH or postgresql://...")
    upgrade.add_argument(
        "--wait",
        type=float,
        default=0,
        metavar="SECONDS",
        help="while the database cannot be reached, try again for up to this long (default 0: once)",
    )
    db.set_defaults(handler=_db)


#: the flags that become body fields as they are named (each command takes some of them)
_FIELDS = (
    "key_alias", "duration", "team_id", "user_id", "team_alias", "user_email", "user_role", "teams",
    "auto_create_key", "alias", "models", "max_budget", "budget_duration", "rpm_limit", "ipm_limit", "metadata",
    "role", "max_budget_in_team",
)  # fmt: skip


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in _FIELDS if getattr(args, name, None) is not None}


def _run(args: argparse.Namespace, method: str, path: str, body: Any = None) -> int:
    master = args.master_key or next((os.environ[n] for n in MASTER_KEY_ENV if os.environ.get(n)), None)
    if not master:
        print("gesso: error: give the proxy's master key: --master-key or $GESSO_MASTER_KEY", file=sys.stderr)
        return 2
    answer = _call(args.url, method, path, master, body)
    if isinstance(answer, int):
        return answer
    print(json.dumps(answer, indent=2))
    return 0


def _query(path: str, **params: str) -> str:
    return f"{path}?{urllib.parse.urlencode(params)}"


def _keys(args: argparse.Namespace) -> int:
    if args.action == "generate":
        return _run(args, "POST", "/key/generate", _fields(args))
    if args.action == "list":
        return _run(args, "GET", "/key/list?return_full_object=true&size=100")
    if args.action == "info":
        return _run(args, "GET", _query("/key/info", key=args.key))
    if args.action in ("block", "unblock"):
        return _run(args, "POST", f"/key/{args.action}", {"key": args.key})
    return _run(args, "POST", "/key/delete", {"keys": args.keys})


def _cache(args: argparse.Namespace) -> int:
    body = {name: value for name, value in (("model", args.model), ("older_than", args.older_than)) if value}
    return _run(args, "POST", "/cache/purge", body)


def _teams(args: argparse.Namespace) -> int:
    action = args.action
    if action in ("new", "update"):
        body = {"team_id": args.team_id, **_fields(args)}
        if action == "new":
            body["members_with_roles"] = [dict(zip(("user_id", "role"), m.split(":", 1), strict=False))
                                          for m in args.member]  # fmt: skip
        return _run(args, "POST", f"/team/{action}", body)
    if action == "list":
        return _run(args, "GET", "/team/list")
    if action == "info":
        return _run(args, "GET", _query("/team/info", team_id=args.team_id))
    if action in ("block", "unblock"):
        return _run(args, "POST", f"/team/{action}", {"team_id": args.team_id})
    if action == "delete":
        return _run(args, "POST", "/team/delete", {"team_ids": args.team_ids})
    if action == "add-member":
        member = {"user_id": args.user_id, **({"role": args.role} if args.role else {})}
        budget = {"max_budget_in_team": args.max_budget_in_team} if args.max_budget_in_team is not None else {}
        return _run(args, "POST", "/team/member_add", {"team_id": args.team_id, "member": member, **budget})
    if action == "update-member":
        return _run(args, "POST", "/team/member_update", {"team_id": args.team_id, "user_id": args.user_id,
                                                          **_fields(args)})  # fmt: skip
    return _run(args, "POST", "/team/member_delete", {"team_id": args.team_id, "user_id": args.user_id})


def _users(args: argparse.Namespace) -> int:
    if args.action in ("new", "update"):
        return _run(args, "POST", f"/user/{args.action}", {"user_id": args.user_id, **_fields(args)})
    if args.action == "list":
        return _run(args, "GET", "/user/list")
    if args.action == "info":
        return _run(args, "GET", _query("/user/info", user_id=args.user_id))
    return _run(args, "POST", "/user/delete", {"user_ids": args.user_ids})


def _customers(args: argparse.Namespace) -> int:
    if args.action in ("new", "update"):
        return _run(args, "POST", f"/customer/{args.action}", {"user_id": args.user_id, **_fields(args)})
    if args.action == "list":
        return _run(args, "GET", "/customer/list")
    if args.action == "info":
        return _run(args, "GET", _query("/customer/info", end_user_id=args.user_id))
    return _run(args, "POST", f"/customer/{args.action}", {"user_ids": args.user_ids})


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
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        try:
            store.upgrade(url)
            break
        except Exception as exc:  # unreachable database, or a schema gesso does not know
            if _unreachable(exc) and time.monotonic() < deadline:
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                continue
            waited = f" (tried for {args.wait:g} s)" if args.wait > 0 and _unreachable(exc) else ""
            print(f"gesso: error: cannot upgrade the database{waited}: {exc}", file=sys.stderr)
            return 1
    print(f"gesso: the database is at the newest schema ({store.redacted(url)})")
    return 0


def _unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the database could not be reached, or is starting up: worth
    trying again, unlike a schema the migrations do not know."""
    import sqlalchemy as sa

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (OSError, sa.exc.OperationalError, sa.exc.InterfaceError)):
            return True
        if type(seen).__name__ in ("CannotConnectNowError", "ConnectionDoesNotExistError", "TooManyConnectionsError"):
            return True  # (asyncpg's: "the database system is starting up"...)
        seen = seen.__cause__ or seen.__context__
    return False
