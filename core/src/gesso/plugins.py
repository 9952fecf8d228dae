"""The plugin manager, built lazily on first use (never at import), and the registry built from it.

Plugins come from three places, in this order: provider plugins (the entry-point group
``gesso.providers``: they always load, since families need them, and ``gesso plugins`` lists them only with
``--all``), family and other plugins (the entry-point group ``gesso``), and objects a host application
registers in-process with :func:`register_plugin`. A plugin that fails to import or to register is skipped
and reported (``gesso plugins`` shows the error); it never breaks the host.

``GESSO_PLUGINS`` restricts which distributions of the ``gesso`` group load: a comma-separated list of
distribution names; set but empty means none. Unset means all installed.

Stage hooks are routed: a call's ``gesso_transform_request``, ``gesso_parse_response`` and
``gesso_calculate_cost`` reach the plugin that registered its model and no other model-registering
plugin, and ``gesso_invoke`` reaches its provider's plugin and no other provider's. Plugins that register
neither (wrappers that record, replay or time calls) see every call.

A stage hook that fails is reported by the plugin's name, never as a bare traceback: an implementation that
raises an exception that is no :class:`~gesso.errors.GessoError`, or returns the wrong type, fails the call with
a :class:`~gesso.errors.PluginHookError` naming its plugin (:func:`culprit` finds the plugin of a hook that hangs
or whose wrapper raises).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import logging
import math
import os
import re
import threading
import types
from collections.abc import Iterator
from typing import Any

import attrs
import pluggy

from gesso import hookspecs, redact
from gesso.errors import GessoError, PluginConflictError, PluginHookError
from gesso.provider import Provider
from gesso.registry import Registry
from gesso.types import Model, ParsedResponse, PreparedRequest, RawResponse

logger = logging.getLogger("gesso.plugins")

ENTRY_POINT_GROUP = "gesso"
PROVIDER_GROUP = "gesso.providers"
PLUGINS_ENV = "GESSO_PLUGINS"
STAGES = (
    "gesso_transform_request", "gesso_invoke", "gesso_ainvoke", "gesso_parse_response", "gesso_calculate_cost",
)  # fmt: skip


@attrs.define
class PluginInfo:
    """One plugin as loaded: its name (the distribution, for entry points), version, the plugin object
    (``None`` if it failed), the load ``error`` if any, whether it is a provider plugin (``builtin``: listed
    only on request), and the model ids, families and providers it registered."""

    name: str
    version: str | None = None
    plugin: Any = None
    error: str | None = None
    builtin: bool = False
    models: list[str] = attrs.field(factory=list)
    families: set[str] = attrs.field(factory=set)
    providers: list[str] = attrs.field(factory=list)


def canonical_name(name: str) -> str:
    """A distribution name normalised as in PEP 503: ``Gesso_Acme.Painter`` -> ``gesso-acme-painter``."""
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def allowed_distributions() -> set[str] | None:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {canonical_name(part) for part in raw.split(",") if part.strip()}


class _State:
    """The process-wide plugin manager, the plugins it loaded, and the registry built from them."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.registry: Registry | None = None
        self._routes: dict[tuple[str, str | None], Any] = {}
        self._load(PROVIDER_GROUP, builtin=True)
        self._load(ENTRY_POINT_GROUP, builtin=False)

    def _load(self, group: str, *, builtin: bool) -> None:
        allowed = None if builtin else allowed_distributions()
        seen: set[tuple[str, str]] = set()
        found = importlib.metadata.entry_points(group=group)
        # load in a stable order, so hook call order does not depend on sys.path or install order
        for ep in sorted(found, key=lambda ep: (canonical_name(ep.dist.name if ep.dist else ep.name), ep.name)):
            dist_name = ep.dist.name if ep.dist is not None else ep.name
            key = canonical_name(dist_name)
            if (allowed is not None and key not in allowed) or (key, ep.name) in seen:
                continue
            seen.add((key, ep.name))
            version = ep.dist.version if ep.dist is not None else None
            info = PluginInfo(name=ep.name if builtin else dist_name, version=version, builtin=builtin)
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must never break the host
                self._record_failure(info, f"import failed: {type(exc).__name__}: {exc}")
                continue
            self._register(info, plugin)

    def _register(self, info: PluginInfo, plugin: Any) -> None:
        name = info.name if self.manager.get_plugin(info.name) is None else f"{info.name}#{len(self.plugins)}"
        try:
            self.manager.register(plugin, name=name)
            unknown = [
                hook.name
                for hook in self.manager.get_hookcallers(plugin) or []
                if not hook.has_spec() and hook.name.startswith("gesso_")
            ]
            if unknown:
                self.manager.unregister(plugin)
                raise ValueError(f"unknown hook(s) {', '.join(sorted(unknown))}; is a name misspelt?")
        except Exception as exc:
            self._record_failure(info, f"registration failed: {type(exc).__name__}: {exc}")
            return
        for caller in self.manager.get_hookcallers(plugin) or []:
            if caller.name in STAGES:
                for impl in caller.get_hookimpls():
                    if impl.plugin is plugin:
                        _guard(impl, caller.name)
        info.plugin = plugin
        self.plugins.append(info)
        self.registry = None

    def _record_failure(self, info: PluginInfo, error: str) -> None:
        info.error = error
        self.plugins.append(info)
        logger.warning("gesso plugin %s was skipped: %s", info.name, error)

    def _declared(self, info: PluginInfo, hook: str, kind: type) -> list[Any]:
        found: list[Any] = []
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            if impl.plugin is not info.plugin:
                continue
            try:
                declared = list(impl.function() or [])
                bad = [item for item in declared if not isinstance(item, kind)]
                if bad:
                    raise TypeError(f"{hook} must return {kind.__module__}.{kind.__name__} objects, got {bad[0]!r}")
            except Exception as exc:
                info.error = f"{hook} failed: {type(exc).__name__}: {exc}"
                logger.warning("gesso plugin %s declared nothing: %s", info.name, info.error)
                continue
            found += declared
        return found

    def build_registry(self) -> Registry:
        providers: dict[str, Provider] = {}
        for info in self.plugins:
            if info.plugin is not None:
                info.providers = []
                for provider in self._declared(info, "gesso_register_providers", Provider):
                    if provider.name not in providers:
                        providers[provider.name] = provider
                        info.providers.append(provider.name)
        default = next((p.name for p in providers.values() if p.default), None)
        claims: dict[tuple[str | None, str], list[str]] = {}
        families: dict[str, list[str]] = {}
        models: list[Model] = []
        for info in self.plugins:
            if info.plugin is None:
                continue
            info.models, info.families = [], set()
            for model in self._declared(info, "gesso_register_models", Model):
                model = attrs.evolve(model, distribution=info.name, provider=model.provider or default)
                models.append(model)
                if model.family not in info.families:
                    info.families.add(model.family)
                    families.setdefault(model.family, []).append(info.name)
                for model_id in dict.fromkeys(model.ids):
                    claims.setdefault((model.provider, model_id), []).append(info.name)
                    info.models.append(model_id)
        conflicts = {model_id: sorted(d) for (_, model_id), d in claims.items() if len(d) > 1}
        conflicts.update({f"family {f}": sorted(d) for f, d in families.items() if len(d) > 1})
        if conflicts:
            raise PluginConflictError(conflicts)
        self._routes.clear()
        return Registry(models, providers)

    def route(self, model: Model) -> Any:
        """The hook relay for one call of ``model``: its family's plugin and its provider's plugin, plus
        every plugin that registers neither models nor providers (wrappers)."""
        key = (model.family, model.provider)
        relay = self._routes.get(key)
        if relay is None:
            owner = next((i for i in self.plugins if i.plugin is not None and model.family in i.families), None)
            provider = next((i for i in self.plugins if i.plugin is not None and model.provider in i.providers), None)
            others = [
                i.plugin
                for i in self.plugins
                if i.plugin is not None
                and ((i.families and i is not owner) or (i.providers and i is not provider and i is not owner))
            ]
            relay = _Relay({stage: _caught(stage, self.manager.subset_hook_caller(stage, others)) for stage in STAGES})
            # a call sent only by provider plugins (which bound their own calls with timeouts) needs no watchdog
            # thread; one that a family or third-party plugin takes part in gets one (its hook may hang)
            invokers = {impl.plugin for impl in relay.gesso_invoke.get_hookimpls()}
            relay.own_invoke = invokers <= {i.plugin for i in self.plugins if i.builtin and i.plugin is not None}
            self._routes[key] = relay
        return relay


class _Relay:
    """Attribute access to routed hook callers: ``relay.gesso_invoke(...)``."""

    own_invoke = False  # only the provider's own plugin sends the call

    def __init__(self, callers: dict[str, Any]) -> None:
        self.__dict__.update(callers)


#: what each stage hook may answer besides ``None`` (gesso_ainvoke: an awaitable of a RawResponse)
_ANSWERS: dict[str, Any] = {
    "gesso_transform_request": PreparedRequest,
    "gesso_invoke": RawResponse,
    "gesso_ainvoke": RawResponse,
    "gesso_parse_response": ParsedResponse,
    "gesso_calculate_cost": (int, float),
}


def _guard(impl: pluggy.HookImpl, hook: str) -> None:
    """Make one stage hook implementation fail as a :class:`PluginHookError` naming its plugin when it raises
    something that is no GessoError or answers with the wrong type. Wrappers are left as they are (what they
    raise is named by :func:`culprit`); pluggy calls ``impl.function``, so the guard replaces it, once."""
    function = impl.function
    if impl.wrapper or impl.hookwrapper or hasattr(function, "__gesso_guarded__"):
        return
    plugin = impl.plugin_name

    def failed(what: str) -> PluginHookError:
        return PluginHookError(f"The gesso plugin {plugin!r} failed in {hook}: {what}", plugin=plugin, hook=hook)

    def raised(exc: Exception) -> PluginHookError:
        return failed(f"it raised {type(exc).__name__}: {redact.redact(str(exc))[:300]}")

    def check(result: Any) -> Any:
        expected = _ANSWERS[hook]
        if hook == "gesso_calculate_cost":
            if isinstance(result, bool) or not isinstance(result, expected) or not math.isfinite(result) or result < 0:
                raise failed(f"it answered {_shown(result)}, not a cost in USD (a number, 0 or more)")
        elif not isinstance(result, expected):
            raise failed(f"it answered {_shown(result)}, not a {expected.__module__}.{expected.__name__}")
        return result

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = function(*args, **kwargs)
        except GessoError:
            raise
        except Exception as exc:
            raise raised(exc) from exc
        if result is None:
            return None
        if hook == "gesso_ainvoke":
            if not inspect.isawaitable(result):
                raise failed(f"it answered {_shown(result)}, not an awaitable (write the hook as async def)")
            return _awaited(result, plugin, raised, check)
        return check(result)

    guarded.__wrapped__ = function  # type: ignore[attr-defined]
    guarded.__gesso_guarded__ = True  # type: ignore[attr-defined]
    impl.function = guarded  # type: ignore[misc]


async def _awaited(pending: Any, plugin: str, raised: Any, check: Any) -> Any:
    """A guarded ``gesso_ainvoke``'s awaitable (its frame names ``plugin``, for :func:`culprit`)."""
    try:
        result = await pending
    except GessoError:
        raise
    except Exception as exc:
        raise raised(exc) from exc
    return check(result)


def _caught(hook: str, caller: Any) -> Any:
    """``caller`` (a routed hook), whose exceptions that are no GessoError (a wrapper's: the others are guarded)
    become a :class:`PluginHookError` naming the plugin that raised."""

    def call(**kwargs: Any) -> Any:
        try:
            return caller(**kwargs)
        except GessoError:
            raise
        except Exception as exc:
            raise hook_failed(hook, exc) from exc

    call.get_hookimpls = caller.get_hookimpls  # type: ignore[attr-defined]
    return call


def hook_failed(hook: str, exc: BaseException) -> PluginHookError:
    """The error for ``exc``, raised by an implementation of ``hook`` (found in its traceback)."""
    plugin = culprit(hook, exc.__traceback__)
    who = f"The gesso plugin {plugin!r}" if plugin else "A gesso plugin"
    what = f"{type(exc).__name__}: {redact.redact(str(exc))[:300]}"
    return PluginHookError(f"{who} failed in {hook}: it raised {what}", plugin=plugin, hook=hook)


def _shown(value: Any) -> str:
    return f"a {type(value).__name__} ({redact.redact(repr(value))[:80]})"


def _code(function: Any) -> types.CodeType | None:
    function = getattr(function, "__wrapped__", function)
    return getattr(getattr(function, "__func__", function), "__code__", None)


def culprit(hook: str, where: types.TracebackType | types.FrameType | None) -> str | None:
    """The plugin whose implementation of ``hook`` is innermost in a traceback (what raised) or in a running
    thread's frames (what hangs); ``None`` when no implementation of it is there."""
    impls = getattr(get_plugin_manager().hook, hook).get_hookimpls()
    owners = {_code(impl.function): impl.plugin_name for impl in impls}
    for frame in _innermost_first(where):
        if frame.f_code in owners:
            return owners[frame.f_code]
        if frame.f_code is _awaited.__code__:  # the awaitable a guarded gesso_ainvoke answered
            return frame.f_locals.get("plugin")
    return None


def _innermost_first(where: types.TracebackType | types.FrameType | None) -> Iterator[types.FrameType]:
    if isinstance(where, types.TracebackType):
        frames = []
        while where is not None:
            frames.append(where.tb_frame)
            where = where.tb_next
        yield from reversed(frames)
        return
    while where is not None:
        yield where
        where = where.f_back


_lock = threading.RLock()
_state: _State | None = None


def _get_state() -> _State:
    global _state
    state = _state
    if state is None:
        with _lock:
            if _state is None:
                _state = _State()
            state = _state
    return state


def get_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built on first use)."""
    return _get_state().manager


def get_registry() -> Registry:
    """The model registry (built on first use; rebuilt after :func:`register_plugin`)."""
    state = _get_state()
    registry = state.registry
    if registry is None:
        with _lock:
            if state.registry is None:
                state.registry = state.build_registry()
            registry = state.registry
    return registry


def route(model: Model) -> Any:
    """The stage hooks for one call of ``model``, routed to the plugins that own it (see the module)."""
    get_registry()
    return _get_state().route(model)


def register_plugin(plugin: Any, name: str | None = None) -> None:
    """Register a plugin object (a module, class or instance with ``@gesso.hookimpl`` functions)
    in-process. Hosts use this for plugins that are not installed as distributions."""
    with _lock:
        state = _get_state()
        label = name or getattr(plugin, "__name__", None) or type(plugin).__name__
        state._register(PluginInfo(name=label), plugin)
        if state.plugins[-1].error:
            raise ValueError(f"plugin {label} could not be registered: {state.plugins[-1].error}")


def unregister_plugin(plugin: Any) -> None:
    """Remove a plugin registered in-process."""
    with _lock:
        state = _get_state()
        state.manager.unregister(plugin)
        state.plugins = [p for p in state.plugins if p.plugin is not plugin]
        state.registry = None


def reset() -> None:
    """Forget every loaded plugin; the next use loads them again (honouring ``GESSO_PLUGINS``)."""
    global _state
    with _lock:
        _state = None


def list_plugins(*, include_builtin: bool = False) -> list[dict[str, Any]]:
    """What ``gesso plugins`` prints: each plugin's name, version, hooks, model ids and load error
    (provider plugins only with ``include_builtin``)."""
    state = _get_state()
    with contextlib.suppress(PluginConflictError):
        get_registry()  # a conflict still lists what loaded; it is reported where models are used
    rows = []
    for info in state.plugins:
        if info.builtin and not include_builtin:
            continue
        hooks = sorted(h.name for h in state.manager.get_hookcallers(info.plugin) or []) if info.plugin else []
        rows.append(
            {"name": info.name, "version": info.version, "hooks": hooks, "models": info.models, "error": info.error}
        )
    return rows
