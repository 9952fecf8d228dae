"""The proxy's config file: litellm's ``config.yaml``, read as litellm reads it, checked as litellm does not.

``model_list`` entries have a ``model_name`` (what clients ask for), ``litellm_params`` (or ``gesso_params``:
the SDK's kwargs, ``model: <provider>/<model id>`` among them) and ``model_info``; ``os.environ/NAME`` values read the
environment; ``general_settings.master_key`` guards the proxy. Keys gesso does not use under
``litellm_settings`` and ``router_settings`` are accepted with one warning each, never silently. A bad config
fails at start with the path of the bad field and, for a near miss, the name it probably meant.
"""

from __future__ import annotations

import datetime
import difflib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from gesso import options as call_options
from gesso import pricing, redact

ENV_PREFIX = call_options.ENV_PREFIX

#: Settings gesso reads (everything else under these sections is warned about once).
ROUTER_SETTINGS = {"cooldown_time": "seconds a failing deployment rests before it is tried again"}
GENERAL_SETTINGS = {
    "master_key": "the admin key; with it, every request needs Authorization: Bearer <key>",
    "max_request_size_mb": "the largest request body taken (default 50 MB)",
    "database_url": "sqlite:///path or postgresql://...; default: gesso.db beside the config",
    "store_prompts": "keep each request's prompt in its spend-log row (default false)",
    "metrics_require_auth": "GET /metrics needs the master key (default false: open, as in litellm)",
    "max_concurrency": "calls in flight per process; more wait (default 4096; --max-concurrency sets it too)",
    "graceful_timeout": "seconds a stop (SIGTERM) lets calls in flight finish before it cancels them (default 60)",
    "health_check_paid": "GET /health?model=NAME by the master key makes one paid call per deployment (default false)",
    "result_store": "where stored answers go (idempotency keys, the exact cache): a directory or s3://bucket/prefix; "
    "default: gesso-results beside the database or the config",
    "result_store_max_mb": "the most the exact cache's part of a directory store holds, least recently used removed "
    "first (default 1024; idempotency keys' answers go when their retention ends)",
    "idempotency_retention": "how long an Idempotency-Key's answer is replayed: 30m, 24h, 7d (default 24h)",
    "cache": "the exact cache of every model name (seeded calls only): true, or ttl (7d) and scope (key|team|global)",
}
#: general_settings that guard access: a key a small edit from one of these (``master_kye``, ``Master-Key``) is
#: an error, not a warning, since ignoring it would leave open what its author meant to close
GUARDS = ("master_key", "database_url", "metrics_require_auth")
#: litellm's own general_settings (its proxy/_types.py ConfigGeneralSettings, and the keys its proxy_server.py
#: reads): warned about as unused, never taken for a misspelling of gesso's
LITELLM_GENERAL_SETTINGS = frozenset(
    (
        "alert_to_webhook_url", "alert_types", "alerting", "alerting_args", "alerting_threshold",
        "allow_cli_sso_verification_uri_complete", "allow_public_health_readiness_details",
        "allow_requests_on_db_unavailable", "allowed_routes", "apply_user_budget_to_team_keys",
        "background_health_check_model_groups", "background_health_checks", "cancel_on_disconnect",
        "completion_model", "control_plane_url", "coordination_redis", "custom_auth",
        "dangerously_permit_weak_or_unset_master_key",
        "database_args", "database_connect_timeout", "database_connection_pool_limit", "database_connection_timeout",
        "database_disable_prepared_statements", "database_extra_connection_params", "database_socket_timeout",
        "database_type", "database_url", "disable_auto_add_proxy_admin_to_teams", "disable_budget_reservation",
        "disable_custom_api_keys", "disable_reset_budget", "disable_spend_logs", "enable_drain_endpoint",
        "enable_public_model_hub", "forward_client_headers_to_llm_api", "global_max_parallel_requests",
        "health_check_concurrency", "health_check_details", "health_check_interval",
        "health_check_skip_disabled_background_models", "image_generation_model", "infer_model_from_keys",
        "key_management_system", "litellm_key_header_name", "master_key", "max_batch_file_size_mb",
        "max_parallel_requests", "max_request_size_mb", "max_response_size_mb",
        "maximum_autorouter_session_retention_period", "maximum_health_check_retention_period",
        "maximum_spend_logs_cleanup_batch_size", "maximum_spend_logs_cleanup_batch_timeout",
        "maximum_spend_logs_cleanup_max_batches", "maximum_spend_logs_cleanup_run_budget",
        "maximum_spend_logs_retention_period", "mcp_internal_ip_ranges", "mcp_required_fields",
        "mcp_trusted_proxy_ranges", "mcp_xff_num_trusted_hops", "model_list_healthy_only", "otel",
        "pass_through_endpoints", "pass_through_request_timeout", "plugins", "provider_url_destination_allowed_hosts",
        "proxy_batch_write_at", "proxy_config_reload_interval_seconds", "reject_clientside_metadata_tags",
        "scheduled_job_stagger", "self_serve_budget_policy", "store_model_in_db", "store_prompts_in_spend_logs",
        "supported_db_objects", "trusted_proxy_ranges", "ui_access_mode", "use_azure_key_vault", "use_google_kms",
        "use_spend_logs_partitioning", "user_api_key_cache_ttl", "user_header_mappings", "user_header_name",
        "user_mcp_management_mode", "user_url_allowed_hosts", "user_url_validation",
    )
)  # fmt: skip
#: litellm's switch for auth on /metrics (``litellm_settings``): read as ``general_settings.metrics_require_auth``
LITELLM_METRICS_AUTH = "require_auth_for_metrics_endpoint"
DEFAULT_COOLDOWN = 5.0
DEFAULT_MAX_MB = 50.0
#: seconds calls in flight may take to finish once the proxy is asked to stop (uvicorn's own default is none: it
#: waits for ever, and gesso used to cancel after 5 s); image calls take up to about a minute
DEFAULT_GRACEFUL_TIMEOUT = 60.0


class ConfigError(Exception):
    """The config cannot be served; the message names the field (``model_list[0].litellm_params.x``)."""


@attrs.frozen
class Deployment:
    """One ``model_list`` entry: the ``model_name`` clients use and the SDK kwargs of its calls."""

    model_name: str
    id: str
    params: Mapping[str, Any] = attrs.field(repr=False)  # SDK kwargs, ``model`` included
    info: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    #: options the deployer lets callers set (``model_info.caller_params``), besides OpenAI's fields and the
    #: model's own parameters (gesso.boundary)
    caller_params: frozenset[str] = frozenset()
    #: its exact cache (``model_info.cache``; None: the config's ``general_settings.cache``, else none); False: off
    cache: CachePolicy | bool | None = None

    @property
    def model(self) -> str:
        return str(self.params["model"])  # (a string: parse refuses a deployment whose model is not one)


@attrs.frozen
class CachePolicy:
    """An exact cache's settings: how long an answer is served again (seconds), and to whom: the virtual key that
    paid for it (``key``), its team (``team``), or every caller who may use the model (``global``)."""

    ttl: float = 7 * 24 * 3600.0
    scope: str = "key"


CACHE_SCOPES = ("key", "team", "global")


def _cache_policy(value: Any, at: str) -> CachePolicy | bool | None:
    """``cache``: true (the defaults), false (off), or a mapping of ``ttl`` (a duration, 7d by default) and
    ``scope`` (key, team or global; key by default)."""
    if value is None or value is False:
        return value
    if value is True:
        return CachePolicy()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{at}: true, false, or a mapping of ttl (such as 7d) and scope (key, team or global)")
    unknown = sorted(str(name) for name in value if name not in ("ttl", "scope"))
    if unknown:
        raise ConfigError(f"{at}.{unknown[0]}: unknown (cache takes ttl and scope)")
    from gesso.proxy.store import parse_duration

    try:
        ttl = parse_duration(value.get("ttl", "7d"), f"{at}.ttl").total_seconds()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    scope = value.get("scope", "key")
    if scope not in CACHE_SCOPES:
        raise ConfigError(f"{at}.scope: must be one of {', '.join(CACHE_SCOPES)} (got {scope!r})")
    return CachePolicy(ttl=ttl, scope=scope)


@attrs.frozen
class ProxyConfig:
    deployments: tuple[Deployment, ...]
    master_key: str | None = attrs.field(default=None, repr=False)
    cooldown: float = DEFAULT_COOLDOWN
    max_request_bytes: int = int(DEFAULT_MAX_MB * 1024 * 1024)
    general: Mapping[str, Any] = attrs.field(factory=dict, repr=False)
    warnings: tuple[str, ...] = ()
    database_url: str | None = attrs.field(default=None, repr=False)
    store_prompts: bool = False
    metrics_require_auth: bool = False
    max_concurrency: int | None = None
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    health_check_paid: bool = False
    #: USD: the budget of an end customer (a request's ``user``) the admin has not given one (litellm's setting)
    max_end_user_budget: float | None = None
    #: the directory of stored answers, its bound in bytes, and how long an idempotency key's answer is replayed
    result_store: str | None = None
    result_store_max_bytes: int = 1 << 30
    idempotency_retention: float = 24 * 3600.0
    #: the exact cache of every deployment that sets none of its own (general_settings.cache; None: off)
    cache: CachePolicy | None = None

    def cache_of(self, deployment: Deployment) -> CachePolicy | None:
        """The cache that answers ``deployment``'s calls, if any."""
        own = deployment.cache
        if own is False:
            return None
        return own if isinstance(own, CachePolicy) else self.cache

    @property
    def model_names(self) -> list[str]:
        return list(dict.fromkeys(d.model_name for d in self.deployments))


def load(path: str | Path) -> ProxyConfig:
    """Read and check ``path``; raises :class:`ConfigError` naming the bad field."""
    import yaml

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    config = parse(data if data is not None else {}, where=str(path))
    if config.database_url is None:  # the embedded default: a SQLite file beside the config
        config = attrs.evolve(config, database_url=f"sqlite:///{Path(path).resolve().with_name('gesso.db')}")
    if config.result_store is None:  # beside a SQLite database's file, else beside the config
        config = attrs.evolve(config, result_store=default_result_store(config.database_url, path))
    return config


def default_result_store(database_url: str | None, config_path: str | Path | None = None) -> str | None:
    """``gesso-results`` beside a SQLite database's file, else beside the config (None: neither is a file)."""
    if database_url is not None and database_url.startswith("sqlite:///"):
        file = database_url[len("sqlite:///") :].split("?", 1)[0]
        if file and not file.startswith(":memory:"):
            return str(Path(file).resolve().with_name("gesso-results"))
    return str(Path(config_path).resolve().with_name("gesso-results")) if config_path is not None else None


def parse(data: Any, *, where: str = "config") -> ProxyConfig:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: must be a mapping with a model_list (got {type(data).__name__})")
    warnings: list[str] = []
    known = {"model_list", "general_settings", "litellm_settings", "router_settings", "environment_variables"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{key}: unknown top-level section{_guess(key, known)}")
    env = data.get("environment_variables") or {}
    if not isinstance(env, Mapping):
        raise ConfigError("environment_variables: must be a mapping of names to values")
    for name, value in env.items():
        os.environ.setdefault(str(name), str(_env(value, f"environment_variables.{name}")))
    general = _section(data, "general_settings")
    router = _section(data, "router_settings")
    litellm = _section(data, "litellm_settings")
    for key in general:
        if key in GENERAL_SETTINGS:
            continue
        guarded = _near(key, GUARDS)
        if guarded is not None and key not in LITELLM_GENERAL_SETTINGS:
            raise ConfigError(f"general_settings.{key}: unknown; did you mean {guarded}?")
        meant = _near(key, GENERAL_SETTINGS) if key not in LITELLM_GENERAL_SETTINGS else None
        hint = f"; did you mean {meant}?" if meant is not None else ""
        warnings.append(f"general_settings.{key}: not used by gesso (ignored){hint}")
    for key in litellm:
        if key not in (LITELLM_METRICS_AUTH, "max_end_user_budget"):
            warnings.append(f"litellm_settings.{key}: not used by gesso (ignored)")
    for key in router:
        if key not in ROUTER_SETTINGS:
            warnings.append(f"router_settings.{key}: not used by gesso (ignored)")
    master = _env(general.get("master_key"), "general_settings.master_key")
    if master is not None and (not isinstance(master, str) or not master):
        raise ConfigError("general_settings.master_key: must be a non-empty string")
    redact.remember([master])  # written in the file or read from the environment, it is never shown
    cooldown = _number(router.get("cooldown_time", DEFAULT_COOLDOWN), "router_settings.cooldown_time")
    max_mb = _number(general.get("max_request_size_mb", DEFAULT_MAX_MB), "general_settings.max_request_size_mb")
    deployments = _deployments(data.get("model_list"), warnings)
    database_url = _env(general.get("database_url"), "general_settings.database_url")
    if database_url is not None and not (
        isinstance(database_url, str) and database_url.startswith(("sqlite:///", "postgresql://", "postgres://"))
    ):
        raise ConfigError("general_settings.database_url: must be sqlite:///PATH or postgresql://USER@HOST/DB")
    store_prompts = general.get("store_prompts", False)
    if not isinstance(store_prompts, bool):
        raise ConfigError("general_settings.store_prompts: must be true or false")
    health_check_paid = general.get("health_check_paid", False)
    if not isinstance(health_check_paid, bool):
        raise ConfigError("general_settings.health_check_paid: must be true or false")
    metrics_require_auth = False
    for at, section, name in (("general_settings", general, "metrics_require_auth"),
                              ("litellm_settings", litellm, LITELLM_METRICS_AUTH)):  # fmt: skip
        value = section.get(name, False)
        if not isinstance(value, bool):
            raise ConfigError(f"{at}.{name}: must be true or false")
        if value and master is None:  # without a master key every caller is the admin: /metrics would stay open
            raise ConfigError(f"{at}.{name}: needs general_settings.master_key, the key /metrics then asks for")
        metrics_require_auth = metrics_require_auth or value
    max_concurrency = general.get("max_concurrency")
    if max_concurrency is not None and (type(max_concurrency) is not int or max_concurrency < 1):
        raise ConfigError("general_settings.max_concurrency: must be a positive whole number")
    graceful_timeout = _number(general.get("graceful_timeout", DEFAULT_GRACEFUL_TIMEOUT),
                               "general_settings.graceful_timeout")  # fmt: skip
    end_user_budget = litellm.get("max_end_user_budget")
    if end_user_budget is not None:
        end_user_budget = _number(end_user_budget, "litellm_settings.max_end_user_budget")
        if end_user_budget == float("inf"):
            raise ConfigError("litellm_settings.max_end_user_budget: must be a finite number of USD")
        if database_url is None:  # an end customer's spend lives in the database
            raise ConfigError("litellm_settings.max_end_user_budget: needs general_settings.database_url")
    result_store = _env(general.get("result_store"), "general_settings.result_store")
    if result_store is not None and (not isinstance(result_store, str) or not result_store.strip()):
        raise ConfigError("general_settings.result_store: must be a directory or a URL such as s3://bucket/prefix")
    if isinstance(result_store, str) and "://" in result_store:
        from gesso.cache import open_store

        try:
            open_store(result_store)  # (checks the URL; nothing is reached over the network)
        except ValueError as exc:
            raise ConfigError(f"general_settings.result_store: {exc}") from None
    store_mb = _number(general.get("result_store_max_mb", 1024), "general_settings.result_store_max_mb")
    if not 1 <= store_mb < float("inf"):
        raise ConfigError("general_settings.result_store_max_mb: must be at least 1 (MB)")
    retention = general.get("idempotency_retention", "24h")
    try:
        from gesso.proxy.store import parse_duration

        retention_seconds = parse_duration(retention, "general_settings.idempotency_retention").total_seconds()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    cache = _cache_policy(general.get("cache"), "general_settings.cache")
    return ProxyConfig(
        cache=cache if isinstance(cache, CachePolicy) else None,
        result_store=result_store,
        result_store_max_bytes=int(store_mb * 1024 * 1024),
        idempotency_retention=retention_seconds,
        deployments=tuple(deployments),
        master_key=master,
        cooldown=cooldown,
        max_request_bytes=int(max_mb * 1024 * 1024),
        general=general,
        warnings=tuple(warnings),
        database_url=database_url,
        store_prompts=store_prompts,
        metrics_require_auth=metrics_require_auth,
        max_concurrency=max_concurrency,
        graceful_timeout=graceful_timeout,
        health_check_paid=health_check_paid,
        max_end_user_budget=end_user_budget,
    )


def _deployments(entries: Any, warnings: list[str]) -> list[Deployment]:
    from gesso import plugins

    if not isinstance(entries, list) or not entries:
        raise ConfigError("model_list: must be a non-empty list of models (model_name, litellm_params)")
    registry = plugins.get_registry()
    found = []
    ids: set[str] = set()
    for index, entry in enumerate(entries):
        at = f"model_list[{index}]"
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{at}: must be a mapping with model_name and litellm_params")
        for key in entry:
            if key not in ("model_name", "litellm_params", "gesso_params", "model_info"):
                raise ConfigError(f"{at}.{key}: unknown{_guess(key, ('model_name', 'litellm_params', 'model_info'))}")
        name = entry.get("model_name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{at}.model_name: required, the name clients ask for")
        key = "gesso_params" if "gesso_params" in entry else "litellm_params"
        if "gesso_params" in entry and "litellm_params" in entry:
            raise ConfigError(f"{at}: give litellm_params or gesso_params, not both")
        raw = entry.get(key)
        if not isinstance(raw, Mapping) or not isinstance(raw.get("model"), str):
            raise ConfigError(f"{at}.{key}.model: required, the SDK's model string (<provider>/<model id>)")
        params = _params(raw, f"{at}.{key}", registry, warnings)
        info = entry.get("model_info") or {}
        if not isinstance(info, Mapping):
            raise ConfigError(f"{at}.model_info: must be a mapping")
        ident = str(info.get("id") or f"{name}-{index}")
        if ident in ids:
            raise ConfigError(f"{at}.model_info.id: {ident!r} is used twice")
        ids.add(ident)
        granted = _caller_params(info.get("caller_params"), f"{at}.model_info.caller_params", raw["model"], registry)
        cache = _cache_policy(info.get("cache"), f"{at}.model_info.cache")
        priced = {key: info[key] for key in pricing.KEYS if key in info}
        if priced:  # the deployment's price (litellm's model_info keys): every call of it is priced so
            _, wrong = pricing.parse(priced, f"{at}.model_info")
            if wrong:
                raise ConfigError("; ".join(f"{v.path}: {v.message}" for v in wrong))
            params = {**params, "prices": priced}
        deployment = Deployment(name.strip(), ident, params, dict(info), granted, cache)
        found.append(deployment)
    return found


def _caller_params(value: Any, at: str, model: str, registry: Any) -> frozenset[str]:
    """The options a deployment lets its callers set: what the core and the provider call grantable (timeouts,
    retries...) and a family's own names outside its schema (a cost cap); never credentials, endpoints, the
    model invoked or where images are written, which are the deployment's configuration."""
    if value is None:
        return frozenset()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{at}: must be a list of option names")
    provider = registry.split_provider(model)
    grantable = call_options.grantable(provider)
    options = call_options.names(provider)
    for name in value:
        if name in options and name not in grantable:
            raise ConfigError(
                f"{at}: {name} is the deployment's configuration and cannot be left to callers (options that "
                f"can: {', '.join(sorted(grantable))}, and a family's own names outside its schema)"
            )
    return frozenset(value)


def _params(raw: Mapping[str, Any], at: str, registry: Any, warnings: list[str]) -> dict[str, Any]:
    """The deployment's SDK kwargs: misspellings litellm documents are mapped (with a warning), near misses
    of an option are errors with the name meant; the rest is checked by preparing a call with them."""
    provider = registry.split_provider(raw["model"])
    names = {*call_options.OPENAI_KWARGS, *(provider.options if provider is not None else ()), "model"}
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"{at}.{key}: keys must be strings")
        target = provider.config_misspellings.get(key) if provider is not None else None
        if target is not None and target in names:
            if target in raw:
                raise ConfigError(f"{at}.{key}: a misspelling of {target}, which is also given; keep one")
            warnings.append(f"{at}.{key}: read as {target} (a misspelling in other tools' documentation)")
            key = target
        elif key not in names:
            close = difflib.get_close_matches(key, sorted(names), n=1, cutoff=0.8)
            if close:
                raise ConfigError(f"{at}.{key}: unknown; did you mean {close[0]}?")
        params[key] = _env(value, f"{at}.{key}")
    return params


def lifecycle(deployment: Deployment) -> Any:
    """The lifecycle of the model a deployment calls (``gesso.types.Lifecycle``), or None when its model string
    names no installed model (``check`` says so)."""
    from gesso import plugins
    from gesso.errors import GessoError

    try:
        _, resolved = plugins.get_registry().resolve(deployment.model, deployment.params)
    except GessoError:
        return None
    return resolved.model.lifecycle


def past_end_of_life(stage: Any, today: datetime.date | None = None) -> bool:
    """Whether a lifecycle says its model is retired, or its announced end of life has come."""
    if stage is None:
        return False
    if stage.status == "eol":
        return True
    day = (today or datetime.date.today()).isoformat()
    return stage.status == "legacy" and stage.end_of_life is not None and stage.end_of_life <= day


def retired(deployments: Sequence[Deployment]) -> frozenset[str]:
    """The ids of the deployments whose model is past its end of life: the router tries them last."""
    return frozenset(d.id for d in deployments if past_end_of_life(lifecycle(d)))


def check(config: ProxyConfig) -> None:
    """Prepare (never send) a call of every deployment, so a bad model, option or parameter fails at start
    with its path rather than on the first request. What each request brings itself (a prompt, an input
    image) is not asked of the deployment: a model that takes no prompt is checked without one, and a field
    reported only as required is left to the request."""
    from gesso import api
    from gesso.errors import GessoError, InvalidRequestError

    for index, deployment in enumerate(config.deployments):
        for prompt in ("config check", None):
            params = dict(deployment.params)
            model = params.pop("model")
            if "image_store" in params:  # the store serves the requests that ask for url images
                params.setdefault("response_format", "url")
            try:
                api._prepare(model, prompt, params)
            except InvalidRequestError as exc:
                left = [v for v in exc.violations if v.message != "is required"]
                if prompt is not None and any(v.path == "prompt" for v in left):
                    continue  # a model that takes no prompt: check it without one
                if left:
                    raise ConfigError(f"model_list[{index}] ({deployment.model_name}): {exc}") from None
            except GessoError as exc:
                raise ConfigError(f"model_list[{index}] ({deployment.model_name}): {exc}") from None
            break


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name) or {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: must be a mapping")
    return value


def _env(value: Any, where: str) -> Any:
    """``value``, or the environment variable an ``os.environ/NAME`` value names, or else the text of the file
    ``$NAME_FILE`` names (the convention of Docker's secrets, mounted as files; one trailing newline dropped): a
    value from either is taken for a secret, never shown in a log line or an answer (only the field is named)."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        if name in os.environ:
            found = os.environ[name]
        elif f"{name}_FILE" in os.environ:
            path = os.environ[f"{name}_FILE"]
            try:
                with open(path, encoding="utf-8") as file:
                    found = file.read().removesuffix("\n").removesuffix("\r")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{where}: cannot read {name}_FILE ({path}): {exc.__class__.__name__}") from None
        else:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        redact.remember([found])
        return found
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{where}: must be a non-negative number (got {value!r})")
    return float(value)


def _near(key: Any, names: Any) -> str | None:
    """The name in ``names`` that ``key`` misspells: at most two edits apart (an insertion, deletion, substitution
    or swap of neighbours each) once case, ``-`` and spaces are set aside, so ``Master-Key`` and ``master_kye``
    both mean ``master_key``."""
    given = "_".join(str(key).strip().lower().replace("-", " ").split())
    found = [(_distance(given, name), name) for name in names if abs(len(given) - len(name)) <= 2]
    best = min(found, default=None, key=lambda pair: pair[0])
    return best[1] if best is not None and best[0] <= 2 else None


def _distance(a: str, b: str) -> int:
    """The Damerau-Levenshtein distance of ``a`` and ``b`` (optimal string alignment)."""
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        before, previous = previous, current
    return previous[-1]


def _guess(key: Any, known: Any) -> str:
    close = difflib.get_close_matches(str(key), sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""
