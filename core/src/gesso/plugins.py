"""The plugin manager, built lazily on first use (never at import), and the registry built from it.

Plugins come from three places, in this order: provider plugins (the entry-point group
``gesso.providers``: they always load, since families need them, and ``gesso plugins`` lists them only with
``--all``), family and other plugins (the entry-point group ``gesso``), and objects a host application
registers in-process with :func:`register_plugin`. A plugin that fails to import or to register is skipped
and reported (``gesso plugins`` shows the error); it never breaks the host.

``GESSO_PLUGINS`` restricts which distributions of the ``gesso`` group load: a comma-separated list of
distribution names; set but empty means none. Unset means all installed.

gesso uses pluggy through its public API only. What it registers for a plugin is a :class:`Registration`: an
object holding the plugin's hook implementations (found with ``PluginManager.parse_hookimpl_opts``), each stage
hook's guarded and marked with the plugin's own options, so pluggy orders and calls them as it would the plugin's.

Stage hooks are routed: a call's ``gesso_transform_request``, ``gesso_parse_response`` and
``gesso_calculate_cost`` reach the plugin that registered its model and no other model-registering
plugin, and ``gesso_invoke`` reaches its provider's plugin and no other provider's
(``PluginManager.subset_hook_caller``). Plugins that register neither (wrappers that record, replay or time
calls) see every call.

A stage hook that fails is reported by the plugin's name, never as a bare traceback: an implementation that
raises an exception that is no :class:`~gesso.errors.GessoError`, or returns the wrong type, fails the call with
a :class:`~gesso.errors.PluginHookError` naming its plugin, and so does a wrapper that raises one. The guards
also note which plugin's implementation is running on each thread and which one an async call was cancelled
in, so :func:`culprit` names the plugin of a hook that hangs.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import inspect
import logging
import math
import os
import re
import threading
import weakref
from collections.abc import Awaitable, Callable, Generator, Mapping
from typing import Any, Protocol, cast

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
    only on request), the model ids, families and providers it registered, and the :class:`Registration`
    gesso registered with pluggy for it."""

    name: str
    version: str | None = None
    plugin: Any = None
    error: str | None = None
    builtin: bool = False
    models: list[str] = attrs.field(factory=list)
    families: set[str] = attrs.field(factory=set)
    providers: list[str] = attrs.field(factory=list)
    registration: Registration | None = None


def canonical_name(name: str) -> str:
    """A distribution name normalised as in PEP 503: ``Gesso_Acme.Painter`` -> ``gesso-acme-painter``."""
    return re.sub(r"[-_.]+", "-", name).lower().strip()


def allowed_distributions() -> set[str] | None:
    raw = os.environ.get(PLUGINS_ENV)
    if raw is None:
        return None
    return {canonical_name(part) for part in raw.split(",") if part.strip()}


class Registration:
    """What gesso registers with pluggy for one plugin (a behaviour-carrying registration object): an attribute
    per hook implementation of ``plugin``, named as in the plugin and marked with its options (``tryfirst``,
    ``wrapper``, ``specname``...). A stage hook's implementation is guarded (see the module); the others are the
    plugin's own. ``name`` is the plugin's name in the plugin manager.

    A hook the plugin implements only under another name (``specname``) also gets an attribute of the hook's
    name, holding those names: pluggy before 1.7 tells which plugins implement a hook by that attribute."""

    def __init__(self, plugin: object, name: str, manager: pluggy.PluginManager) -> None:
        self.plugin = plugin
        self.name = name
        implemented: dict[str, list[str]] = {}
        for attribute in dir(plugin):
            opts = manager.parse_hookimpl_opts(plugin, attribute)
            if opts is None:
                continue
            if attribute in ("plugin", "name"):
                raise ValueError(f"a hook implementation may not be called {attribute!r}; name the hook with specname")
            hook = opts.get("specname") or attribute
            function = getattr(plugin, attribute)
            setattr(self, attribute, _guarded(function, opts.copy(), hook, name) if hook in STAGES else function)
            implemented.setdefault(hook, []).append(attribute)
        for hook, attributes in implemented.items():
            if not hasattr(self, hook):
                setattr(self, hook, tuple(attributes))

    def __repr__(self) -> str:
        return f"<gesso plugin {self.name!r}: {self.plugin!r}>"


class Stage(Protocol):
    """One stage hook of a call, routed (see :func:`_stage`): ``stage(**arguments)`` calls it."""

    def __call__(self, **kwargs: Any) -> Any: ...

    def get_hookimpls(self) -> list[pluggy.HookImpl]:
        """The implementations this call reaches (pluggy's ``HookImpl``, whose ``plugin`` is a Registration)."""
        ...


def _stage(hook: str, caller: pluggy.HookCaller) -> Stage:
    """``caller`` as a :class:`Stage`: an exception that is no GessoError and got past the guards (pluggy's own,
    or one of a plugin registered into the manager directly, unguarded) becomes a :class:`PluginHookError`. A
    function, not a class: a call through it costs less."""

    def stage(**kwargs: Any) -> Any:
        try:
            return caller(**kwargs)
        except GessoError:
            raise
        except Exception as exc:
            raise hook_failed(hook, exc) from exc

    stage.__dict__["get_hookimpls"] = caller.get_hookimpls
    return cast(Stage, stage)


class Relay:
    """The stage hooks of one call, routed to the plugins that own its model: ``relay.gesso_invoke(...)``.
    ``own_invoke``: only the provider's own plugins send the call."""

    __slots__ = (*STAGES, "own_invoke")

    def __init__(self, stages: Mapping[str, Stage], own_invoke: bool) -> None:
        self.gesso_transform_request = stages["gesso_transform_request"]
        self.gesso_invoke = stages["gesso_invoke"]
        self.gesso_ainvoke = stages["gesso_ainvoke"]
        self.gesso_parse_response = stages["gesso_parse_response"]
        self.gesso_calculate_cost = stages["gesso_calculate_cost"]
        self.own_invoke = own_invoke


class _State:
    """The process-wide plugin manager, the plugins it loaded, and the registry built from them."""

    def __init__(self) -> None:
        self.manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.manager.add_hookspecs(hookspecs)
        self.plugins: list[PluginInfo] = []
        self.registry: Registry | None = None
        self._routes: dict[tuple[str, str | None], Relay] = {}
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

    def _register(self, info: PluginInfo, plugin: object) -> None:
        name = info.name if self.manager.get_plugin(info.name) is None else f"{info.name}#{len(self.plugins)}"
        registration = None
        try:
            twin = next((other.name for other in self.plugins if other.plugin is plugin), None)
            if twin is not None:
                raise ValueError(f"the plugin is already registered, as {twin}")
            registration = Registration(plugin, name, self.manager)
            self.manager.register(registration, name=name)
            unknown = [
                hook.name
                for hook in self.manager.get_hookcallers(registration) or []
                if not hook.has_spec() and hook.name.startswith("gesso_")
            ]
            if unknown:
                raise ValueError(f"unknown hook(s) {', '.join(sorted(unknown))}; is a name misspelt?")
        except Exception as exc:
            if registration is not None and self.manager.is_registered(registration):
                self.manager.unregister(registration)  # what pluggy registered before it refused a hook
            self._record_failure(info, f"registration failed: {type(exc).__name__}: {exc}")
            return
        info.plugin, info.registration = plugin, registration
        self.plugins.append(info)
        self.registry = None

    def _record_failure(self, info: PluginInfo, error: str) -> None:
        info.error = error
        self.plugins.append(info)
        logger.warning("gesso plugin %s was skipped: %s", info.name, error)

    def _declared(self, info: PluginInfo, hook: str, kind: type, caller: pluggy.HookCaller | None) -> list[Any]:
        """What ``info``'s plugin declares with the registration hook ``hook``, through ``caller``, which reaches
        its implementation alone: a failure, or an object that is no ``kind``, is its error (it declares nothing)."""
        if caller is None:
            return []
        try:
            declared = [item for answer in caller() for item in answer]
            bad = [item for item in declared if not isinstance(item, kind)]
            if bad:
                raise TypeError(f"{hook} must return {kind.__module__}.{kind.__name__} objects, got {bad[0]!r}")
        except Exception as exc:
            info.error = f"{hook} failed: {type(exc).__name__}: {exc}"
            logger.warning("gesso plugin %s declared nothing: %s", info.name, info.error)
            return []
        return declared

    def build_registry(self) -> Registry:
        providers: dict[str, Provider] = {}
        callers = dict(_each(self.manager, "gesso_register_providers"))
        for info in self.plugins:
            if info.plugin is not None:
                info.providers = []
                caller = callers.get(info.registration)
                for provider in self._declared(info, "gesso_register_providers", Provider, caller):
                    if provider.name not in providers:
                        providers[provider.name] = provider
                        info.providers.append(provider.name)
        default = next((p.name for p in providers.values() if p.default), None)
        claims: dict[tuple[str | None, str], list[str]] = {}
        families: dict[str, list[str]] = {}
        models: list[Model] = []
        callers = dict(_each(self.manager, "gesso_register_models"))
        for info in self.plugins:
            if info.plugin is None:
                continue
            info.models, info.families = [], set()
            for declared in self._declared(info, "gesso_register_models", Model, callers.get(info.registration)):
                model = attrs.evolve(declared, distribution=info.name, provider=declared.provider or default)
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

    def route(self, model: Model) -> Relay:
        """The hook relay for one call of ``model``: its family's plugin and its provider's plugin, plus
        every plugin that registers neither models nor providers (wrappers)."""
        key = (model.family, model.provider)
        relay = self._routes.get(key)
        if relay is None:
            loaded = [i for i in self.plugins if i.registration is not None]
            owner = next((i for i in loaded if model.family in i.families), None)
            provider = next((i for i in loaded if model.provider in i.providers), None)
            others = [
                i.registration
                for i in loaded
                if (i.families and i is not owner) or (i.providers and i is not provider and i is not owner)
            ]
            stages = {stage: _stage(stage, self.manager.subset_hook_caller(stage, others)) for stage in STAGES}
            # a call sent only by provider plugins (which bound their own calls with timeouts) needs no watchdog
            # thread; one that a family or third-party plugin takes part in gets one (its hook may hang)
            invokers = {impl.plugin for impl in stages["gesso_invoke"].get_hookimpls()}
            relay = Relay(stages, own_invoke=invokers <= {i.registration for i in loaded if i.builtin})
            self._routes[key] = relay
        return relay


def _each(manager: pluggy.PluginManager, hook: str) -> list[tuple[Any, pluggy.HookCaller]]:
    """Every plugin implementing ``hook``, in pluggy's order, with a hook caller that reaches its own
    implementations only."""
    owners = list(dict.fromkeys(impl.plugin for impl in getattr(manager.hook, hook).get_hookimpls()))
    return [(plugin, manager.subset_hook_caller(hook, [o for o in owners if o is not plugin])) for plugin in owners]


def each(hook: str) -> list[tuple[str, pluggy.HookCaller]]:
    """Every plugin that implements ``hook`` (in the order pluggy holds them: registration order, then
    ``tryfirst``/``trylast``), as its name and a hook caller that reaches that plugin's implementations only:
    call a registration hook plugin by plugin, and one plugin's failure is told apart from the others' answers."""
    manager = get_plugin_manager()
    return [(manager.get_name(plugin) or repr(plugin), caller) for plugin, caller in _each(manager, hook)]


# -- the guards -------------------------------------------------------------------------------------------------

#: what each stage hook may answer besides ``None`` (gesso_ainvoke: an awaitable of a RawResponse;
#: gesso_calculate_cost: a cost in USD, checked on its own)
_ANSWERS: dict[str, type] = {
    "gesso_transform_request": PreparedRequest,
    "gesso_invoke": RawResponse,
    "gesso_ainvoke": RawResponse,
    "gesso_parse_response": ParsedResponse,
}


class _Stack(list[tuple[str, str]]):
    """The implementations of watched stage hooks (``_THREADED``) running on one thread, innermost last:
    (hook, plugin)."""

    __slots__ = ("__weakref__",)


#: the stage hooks gesso may run on a thread of their own, watched (a call's deadline): their guards note, on the
#: thread's stack, what runs there
_THREADED = frozenset({"gesso_invoke"})
#: each live thread's stack, by thread id (for culprit: what a hung thread is running)
_stacks: weakref.WeakValueDictionary[int, _Stack] = weakref.WeakValueDictionary()
#: the exceptions (a cancellation) that came out of a guarded awaitable: (hook, plugin) it came from
_blamed: weakref.WeakKeyDictionary[BaseException, tuple[str, str]] = weakref.WeakKeyDictionary()


class _Local(threading.local):
    stack: _Stack

    def __init__(self) -> None:
        self.stack = _Stack()
        _stacks[threading.get_ident()] = self.stack


_local = _Local()


def _failed(hook: str, plugin: str, what: str) -> PluginHookError:
    return PluginHookError(f"The gesso plugin {plugin!r} failed in {hook}: {what}", plugin=plugin, hook=hook)


def _raised(exc: BaseException) -> str:
    return f"it raised {type(exc).__name__}: {redact.redact(str(exc))[:300]}"


def _shown(value: object) -> str:
    return f"a {type(value).__name__} ({redact.redact(repr(value))[:80]})"


def _checked(hook: str, plugin: str, result: Any) -> Any:
    """``result``, an answer of ``plugin``'s ``hook`` that is not None, if it is of the type the hook answers."""
    if hook == "gesso_calculate_cost":
        if isinstance(result, bool) or not isinstance(result, (int, float)) or not math.isfinite(result) or result < 0:
            raise _failed(hook, plugin, f"it answered {_shown(result)}, not a cost in USD (a number, 0 or more)")
        return result
    expected = _ANSWERS[hook]
    if not isinstance(result, expected):
        raise _failed(hook, plugin, f"it answered {_shown(result)}, not a {expected.__module__}.{expected.__name__}")
    return result


def _guarded(function: Callable[..., Any], opts: pluggy.HookimplOpts, hook: str, plugin: str) -> Callable[..., Any]:
    """``function``, ``plugin``'s implementation of the stage hook ``hook``, guarded, as pluggy will call it
    (the arguments it takes are read from its signature, through ``__wrapped__``), marked with ``opts``."""
    if opts.get("wrapper") or opts.get("hookwrapper"):
        if not inspect.isgeneratorfunction(function):
            return function  # pluggy refuses it, saying why
        guarded = _watched_wrapper(function, hook, plugin)
    else:
        guarded = _guarded_implementation(function, hook, plugin)
    functools.update_wrapper(guarded, function)
    return hookspecs.hookimpl(**opts)(guarded)


def _run(
    running: tuple[str, str], threaded: bool, thrown: BaseException | None, call: Callable[..., Any], *args: Any
) -> Any:
    """``call(*args)``, code of the plugin ``running`` names (hook, plugin): what it raises that is no GessoError
    (but ``thrown``, which an inner implementation raised and it let through, and StopIteration, a wrapper's end)
    is a PluginHookError naming the plugin. A ``threaded`` hook's call is noted on the thread's stack."""
    if threaded:
        stack = _local.stack
        stack.append(running)
    try:
        return call(*args)
    except (GessoError, StopIteration):
        raise
    except Exception as exc:
        if exc is thrown:
            raise
        raise _failed(*running, _raised(exc)) from exc
    finally:
        if threaded:
            stack.pop()


def _guarded_implementation(function: Callable[..., Any], hook: str, plugin: str) -> Callable[..., Any]:
    """An implementation that fails as a PluginHookError naming ``plugin`` when it raises something that is no
    GessoError or answers with the wrong type (gesso_ainvoke: its awaitable's answer)."""
    running, threaded = (hook, plugin), hook in _THREADED

    def guarded(*args: Any, **kwargs: Any) -> Any:
        result = _run(running, threaded, None, functools.partial(function, **kwargs) if kwargs else function, *args)
        if result is None:
            return None
        if hook == "gesso_ainvoke":
            if not inspect.isawaitable(result):
                raise _failed(
                    hook, plugin, f"it answered {_shown(result)}, not an awaitable (write the hook as async def)"
                )
            return _awaited(result, hook, plugin, check=True)
        return _checked(hook, plugin, result)

    return guarded


def _watched_wrapper(
    function: Callable[..., Generator[Any, Any, Any]], hook: str, plugin: str
) -> Callable[..., Generator[Any, Any, Any]]:
    """A wrapper (``wrapper=True`` or ``hookwrapper=True``, a generator) that fails as a PluginHookError naming
    ``plugin`` when its own code raises something that is no GessoError (what it lets through from the
    implementations inside is theirs), or does not yield exactly once. A gesso_ainvoke wrapper's awaitable is
    named the same way."""
    running, threaded = (hook, plugin), hook in _THREADED

    def watched(*args: Any, **kwargs: Any) -> Generator[Any, Any, Any]:
        wrapper = function(*args, **kwargs)
        try:
            value = _run(running, threaded, None, wrapper.send, None)
        except StopIteration:
            raise _failed(hook, plugin, "its wrapper ended without yielding") from None
        step: Callable[[Any], Any] = wrapper.send
        thrown: BaseException | None = None
        try:
            value = yield value
        except GeneratorExit:
            wrapper.close()
            raise
        except BaseException as exc:  # raised by the implementations inside: pluggy throws it in
            step, value, thrown = wrapper.throw, exc, exc
        try:
            _run(running, threaded, thrown, step, value)
        except StopIteration as stop:
            value = stop.value
        else:
            wrapper.close()
            raise _failed(hook, plugin, "its wrapper yielded twice")
        if hook == "gesso_ainvoke" and inspect.isawaitable(value):
            return _awaited(value, hook, plugin, check=False)
        return value

    return watched


async def _awaited(pending: Awaitable[Any], hook: str, plugin: str, *, check: bool) -> Any:
    """An awaitable ``plugin``'s gesso_ainvoke answered, guarded: what it raises that is no GessoError is a
    PluginHookError naming ``plugin``, its answer is checked (``check``), and a cancellation (the call's deadline)
    that comes out of it is noted as ``plugin``'s, for :func:`culprit`."""
    try:
        result = await pending
    except GessoError:
        raise
    except Exception as exc:
        raise _failed(hook, plugin, _raised(exc)) from exc
    except BaseException as exc:
        _blamed.setdefault(exc, (hook, plugin))  # the innermost plugin notes it first
        raise
    return _checked(hook, plugin, result) if check else result


def hook_failed(hook: str, exc: BaseException) -> PluginHookError:
    """The error for ``exc``, raised by an implementation of ``hook`` (see :func:`culprit`)."""
    plugin = culprit(hook, exc)
    who = f"The gesso plugin {plugin!r}" if plugin else "A gesso plugin"
    what = f"{type(exc).__name__}: {redact.redact(str(exc))[:300]}"
    return PluginHookError(f"{who} failed in {hook}: it raised {what}", plugin=plugin, hook=hook)


def culprit(hook: str, where: int | BaseException | None) -> str | None:
    """The plugin an implementation of ``hook`` belongs to, ``None`` when none is known. ``where`` is the id of a
    thread (``threading.get_ident()``) running a watched hook (``gesso_invoke``): the plugin whose implementation
    of it is innermost there (what hangs); or an exception that came out of the hook: the plugin whose guarded
    awaitable it came out of (a cancellation at the call's deadline), looking also at the exceptions it was
    raised from or during."""
    if isinstance(where, int):
        for running, plugin in reversed(list(_stacks.get(where) or ())):
            if running == hook:
                return plugin
        return None
    seen: set[int] = set()
    while where is not None and id(where) not in seen:
        seen.add(id(where))
        blamed = _blamed.get(where)
        if blamed is not None and blamed[0] == hook:
            return blamed[1]
        where = where.__cause__ or where.__context__
    return None


# -- the process-wide state -------------------------------------------------------------------------------------

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
    """The process-wide plugin manager (built on first use). Its plugins are :class:`Registration` objects:
    ``manager.get_plugin(name).plugin`` is the plugin as loaded."""
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


def route(model: Model) -> Relay:
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
    """Remove a plugin registered in-process (the plugin object, or its :class:`Registration`)."""
    with _lock:
        state = _get_state()
        gone = [p for p in state.plugins if p.registration is not None and plugin in (p.plugin, p.registration)]
        if not gone:
            raise ValueError(f"{plugin!r} is not a registered gesso plugin")
        for info in gone:
            state.manager.unregister(info.registration)
        state.plugins = [p for p in state.plugins if all(p is not info for info in gone)]
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
        callers = state.manager.get_hookcallers(info.registration) if info.registration is not None else None
        hooks = sorted(caller.name for caller in callers or [])
        rows.append(
            {"name": info.name, "version": info.version, "hooks": hooks, "models": info.models, "error": info.error}
        )
    return rows
