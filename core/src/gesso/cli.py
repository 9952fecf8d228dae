"""The ``gesso`` command line: generate images, list plugins and models; plugins add commands of their own."""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

from gesso import __version__, params
from gesso.errors import GessoError, InvalidRequestError
from gesso.pricing import PER_TOKEN

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


def _param(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    try:
        value = params.json_loads(raw)
    except ValueError:
        value = raw
    return key, _files(value)


def _prices(text: str) -> dict[str, Any]:
    """``--prices``: a JSON object of deployment prices (gesso.pricing)."""
    try:
        value = params.json_loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        example = '\'{"input_cost_per_token": 1e-6, "output_cost_per_token": 4e-5}\''
        raise argparse.ArgumentTypeError(f"a JSON object, e.g. '{{\"output_cost_per_image\": 0.05}}' or {example}")
    return value


_PRICES_HELP = ("your price, when no public one holds (a negotiated rate, a preview model): a JSON object of "
                "output_cost_per_image (USD an image, or by the model's price classes) or input_cost_per_token and "
                "output_cost_per_token")  # fmt: skip


def _files(value: Any) -> Any:
    """``@path`` (as with curl) names a file: it is passed as a ``pathlib.Path``, which gesso reads."""
    if isinstance(value, str) and value.startswith("@") and len(value) > 1:
        return Path(value[1:])
    if isinstance(value, list):
        return [_files(v) for v in value]
    if isinstance(value, dict):
        return {k: _files(v) for k, v in value.items()}
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gesso", description="Image generation: SDK, CLI and plugin framework.")
    parser.add_argument("--version", action="version", version=f"gesso {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate images and write them as files")
    gen.add_argument("prompt", nargs="?", help="what to draw (leave out for tasks without a prompt)")
    gen.add_argument("-m", "--model", required=True, help="<provider>/<model id> (gesso models lists them)")
    gen.add_argument("--size", help='"WIDTHxHEIGHT", e.g. 1024x1024')
    gen.add_argument("-n", type=int, help="number of images")
    gen.add_argument("--quality", help="standard, premium, or OpenAI's hd/high/low/medium/auto")
    gen.add_argument(
        "--param",
        "-p",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="a model parameter; VALUE is read as JSON when it parses (seed=42, colors='[\"#FF0000\"]'), "
        "else as a string (negativeText=blurry); @FILE names a file, e.g. image=@photo.png. Repeatable.",
    )
    gen.add_argument(
        "--option",
        action="append",
        type=_param,
        default=[],
        metavar="KEY=VALUE",
        help="an option of the model's provider (credentials, endpoint, retries...), read as -p reads values. "
        "Repeatable.",
    )
    gen.add_argument("-o", "--output-dir", default=".", help="where to write the images (default: .)")
    gen.add_argument("--timeout", type=float, help="read timeout in seconds")
    gen.add_argument("--prices", type=_prices, metavar="JSON", help=_PRICES_HELP)
    gen.add_argument("--emulator", action="store_true", help="run the provider's local emulator and use it")
    gen.add_argument("--json", action="store_true", help="print the response JSON (without image data) only")
    providers = _providers()
    _provider_flags(gen, providers)

    plug = sub.add_parser("plugins", help="list the loaded plugins (a table on a terminal, else JSON)")
    plug.add_argument("--all", action="store_true", help="include provider plugins")
    plug.add_argument("--json", action="store_true", help="print JSON, even on a terminal")

    models = sub.add_parser("models", help="list every model id the installed plugins own")
    models.add_argument("--json", action="store_true", help="print details as JSON")

    schema = sub.add_parser("schema", help="print the JSON Schema of a model's provider parameters")
    schema.add_argument("model", help="<provider>/<model id> (gesso models lists them)")
    schema.add_argument("--task", help="narrow to one task of a task-based family (taskType), e.g. TEXT_IMAGE")

    cost = sub.add_parser("cost", help="print the price of a call, without making it (no credentials needed)")
    cost.add_argument("model", help="<provider>/<model id> (gesso models lists them)")
    cost.add_argument("--prompt", help="the prompt (it does not change the price; checked when given)")
    cost.add_argument("--size", help='"WIDTHxHEIGHT", e.g. 1024x1024')
    cost.add_argument("-n", type=int, help="number of images")
    cost.add_argument("--quality", help="standard, premium, or OpenAI's hd/high/low/medium/auto")
    cost.add_argument("--operation", choices=("generate", "edit", "variation"), default="generate")
    cost.add_argument("--image", action="append", default=[], metavar="FILE", help="an input image (edit, variation)")
    cost.add_argument("--mask", metavar="FILE", help="the mask of an edit")
    cost.add_argument("--param", "-p", action="append", type=_param, default=[], metavar="KEY=VALUE",
                      help="a model parameter, as with gesso generate. Repeatable.")  # fmt: skip
    cost.add_argument("--option", action="append", type=_param, default=[], metavar="KEY=VALUE",
                      help="an option of the model's provider. Repeatable.")  # fmt: skip
    cost.add_argument("--prices", type=_prices, metavar="JSON", help=_PRICES_HELP)
    cost.add_argument("--json", action="store_true", help="print JSON")
    _provider_flags(cost, providers)

    bat = sub.add_parser(
        "batch",
        help="run one call per line of a JSONL file: resumable, budgeted, with a manifest",
        description="Run one call per line of INPUT (JSON objects of SDK kwargs; operation edit|variation with "
        "image/mask paths relative to INPUT). Images and manifest.jsonl go to OUTDIR; running again skips the "
        "lines already done (an edited line is redone). Exit status: 0 all done, 1 some lines failed, 3 stopped "
        "by --max-cost, 130 interrupted.",
    )
    bat.add_argument("input", help="the JSONL file, one request per line")
    bat.add_argument("-o", "--output-dir", required=True, help="where the images and manifest.jsonl go")
    bat.add_argument("--concurrency", type=int, default=4, help="calls in flight at once (default: 4)")
    bat.add_argument("--max-cost", type=float, metavar="USD", help="never start a call that could pass this spend "
                     "(what the manifest records, earlier runs included, plus the calls in flight)")  # fmt: skip
    bat.add_argument("--dry-run", action="store_true", help="check and price every line; send nothing")
    bat.add_argument("--retry-failed", action="store_true", help="redo the lines whose last attempt failed")
    bat.add_argument("-m", "--model", help="the model of lines that name none")
    bat.add_argument("--option", action="append", type=_param, default=[], metavar="KEY=VALUE",
                     help="an option of the provider given to every line (a line's own wins). Repeatable.")  # fmt: skip
    bat.add_argument("--emulator", action="store_true", help="run each provider's local emulator and use it")
    bat.add_argument("--cache", metavar="DIR", help="answer a seeded line from DIR (or s3://bucket/prefix) when an "
                     "identical call was made before (any batch, any run), and keep each answer there")  # fmt: skip
    bat.add_argument("--prices", type=_prices, metavar="JSON", help=_PRICES_HELP + " (every line; a line's own wins)")
    bat.add_argument("--json", action="store_true", help="print the summary as JSON")
    _provider_flags(bat, providers)
    for name, handler in (
        ("generate", _generate), ("plugins", _plugins), ("models", _models), ("schema", _schema), ("cost", _cost),
        ("batch", _batch),
    ):  # fmt: skip
        sub.choices[name].set_defaults(handler=handler)
    from gesso.proxy import admin, serve

    serve.add_command(sub)
    admin.add_commands(sub)
    from gesso import plugins

    plugins.get_plugin_manager().hook.gesso_register_commands(subcommands=sub)
    return parser


def _provider_flags(parser: argparse.ArgumentParser, providers: list[Any]) -> None:
    """The providers' own flags (``--region`` sets ``aws_region_name``...), each once."""
    flags: set[str] = set()
    for provider in providers:
        for option in provider.cli_options:
            if option.flag not in flags:
                flags.add(option.flag)
                parser.add_argument(option.flag, dest=f"option:{option.option}", type=option.type, help=option.help)


def _flag_options(args: argparse.Namespace) -> dict[str, Any]:
    return {k.split(":", 1)[1]: v for k, v in vars(args).items() if k.startswith("option:") and v is not None}


def _providers() -> list[Any]:
    """The installed providers (a broken plugin set lists none: the command that uses them says why)."""
    from gesso import plugins

    try:
        return list(plugins.get_registry().providers.values())
    except GessoError:
        return []


def _show_warning(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
    with _Spinner.pause():
        print(f"gesso: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _show_warning
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return int(args.handler(args) or 0)
    except GessoError as exc:
        print(f"gesso: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `gesso plugins | head`
        sys.stderr.close()
        return 0


def _generate(args: argparse.Namespace) -> int:
    from gesso.api import image_generation

    kwargs: dict[str, Any] = dict(args.param)
    kwargs.update(args.option)
    given = {"size": args.size, "n": args.n, "quality": args.quality, "timeout": args.timeout, "prices": args.prices}
    kwargs.update({k: v for k, v in given.items() if v is not None})
    kwargs.update(_flag_options(args))
    out_dir = Path(args.output_dir)
    made, problem = _prepare_output(out_dir)
    if problem:  # said before the paid call, not after it
        print(f"gesso: error: --output-dir {str(out_dir)!r}: {problem}", file=sys.stderr)
        return 2
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(_Spinner(sys.stderr, args.model.rpartition("/")[2]))  # a terminal only
            if args.emulator:
                kwargs.update(stack.enter_context(_emulator(args.model, kwargs)))
            response = image_generation(args.model, args.prompt, **kwargs)
    except BaseException as exc:
        _remove(made)
        if isinstance(exc, InvalidRequestError):
            _hint_at_files(exc, args.param)
        raise
    slug = re.sub(r"[^a-z0-9]+", "-", (args.prompt or "").lower()).strip("-")[:40] or "image"
    paths: list[str] = []
    try:
        for index, item in enumerate(response.data, start=1):
            data = base64.b64decode(item.b64_json or "")
            ext = _EXTENSIONS.get(_mime(data), "png")
            path = out_dir / f"{slug}-{index}-{hashlib.sha256(data).hexdigest()[:8]}.{ext}"
            path.write_bytes(data)
            paths.append(str(path))
    except OSError as exc:
        print(f"gesso: error: cannot write the images to {str(out_dir)!r}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for warning in response.warnings:
        print(f"gesso: warning: {warning}", file=sys.stderr)
    if args.json:  # stdout is one JSON document and nothing else
        summary = response.to_dict()
        summary["data"] = [
            {k: f"<{len(v)} chars>" if k == "b64_json" else v for k, v in d.items()} for d in summary["data"]
        ]
        summary["files"] = paths
        print(json.dumps(summary, indent=2))
        return 0
    for written in paths:
        print(written)
    count = len(response.data)
    cost = "unknown" if response.cost is None else f"${response.cost:.4f}"
    tokens = f", {response.usage['total_tokens']} tokens" if response.usage else ""
    print(f"cost: {cost} ({count} image{'s' if count != 1 else ''}{tokens}, {response.model})")
    if args.emulator:
        print(_emulated(args.model))
    return 0


def _prepare_output(out_dir: Path) -> tuple[list[Path], str | None]:
    """Make ``out_dir`` (and its missing parents) and prove a file can be written there, before the paid
    call. Returns (the directories made, to remove if the call fails; why it cannot be used, or None)."""
    import tempfile

    if out_dir.exists() and not out_dir.is_dir():
        return [], "is a file, not a directory; name a directory to write the images into"
    made = [p for p in (out_dir, *out_dir.parents) if not p.exists()]
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        _remove(made)
        return [], f"cannot write there: {exc.strerror or exc}"
    return made, None


def _remove(made: list[Path]) -> None:
    for directory in made:  # innermost first; only what gesso made, and only while empty
        with contextlib.suppress(OSError):
            directory.rmdir()


def _hint_at_files(error: InvalidRequestError, params: list[tuple[str, Any]]) -> None:
    """``-p image=product.png`` passes the text "product.png"; when that names a file, say to write @."""
    for key, value in params:
        named = isinstance(value, str) and any(v.path.split(".")[-1].split("[")[0] == key for v in error.violations)
        if named and (Path(value).is_file() or Path(value).suffix.lower() in (".png", ".jpg", ".jpeg", ".webp")):
            print(f"gesso: hint: to pass the file, write -p {key}=@{value}", file=sys.stderr)


def _mime(data: bytes) -> str:
    from gesso.imaging import ImageFormatError, inspect

    try:
        return f"image/{inspect(data).format}"
    except ImageFormatError:
        return "application/octet-stream"


def _emulator(model: str, kwargs: dict[str, Any]) -> Any:
    """The model's provider's emulator, running for the call (the options it yields point the call at it)."""
    from gesso import plugins

    return plugins.get_registry().emulate(model, kwargs)


def _emulated(model: str) -> str:
    """What ``generate --emulator`` says after the cost: the provider (by its title) was not called."""
    from gesso import plugins

    provider = plugins.get_registry().split_provider(model)
    title = (provider.title or provider.name) if provider is not None else "provider"
    return f"(emulated: no {title} call was made)"


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _table(header: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; the last column is not padded (it may run long)."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = []
    for row in [header, *rows]:
        cells = [str(c).ljust(w) for c, w in zip(row, widths)] + [str(row[-1])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _plugins(args: argparse.Namespace) -> int:
    from gesso.plugins import list_plugins

    rows = list_plugins(include_builtin=args.all)
    if args.json or not _isatty(sys.stdout):  # machines (and pipes) get JSON, as before
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no gesso plugins loaded (GESSO_PLUGINS may exclude them; --all lists the providers)")
        return 0
    table = [
        [p["name"], p["version"] or "", str(len(p["models"])), str(len(p["hooks"])),
         "ok" if not p["error"] else f"failed: {p['error']}"]
        for p in rows
    ]  # fmt: skip
    print(_table(["PLUGIN", "VERSION", "MODEL IDS", "HOOKS", "STATUS"], table))
    return 0


def _models(args: argparse.Namespace) -> int:
    from gesso.plugins import get_registry

    registry = get_registry()

    def usable_ids(model: Any) -> tuple[str, ...]:
        return registry.provider_of(model).usable_ids(model) if model.provider in registry.providers else model.ids

    if args.json:
        rows = [
            {
                "id": m.id, "ids": list(usable_ids(m)), "family": m.family, "name": m.name,
                "distribution": m.distribution,
                "prices": dict(m.prices), "capabilities": sorted(m.capabilities),
                "lifecycle": {"status": m.lifecycle.status, "end_of_life": m.lifecycle.end_of_life},
            }
            for m in registry.models
        ]  # fmt: skip
        print(json.dumps(rows, indent=2))
        return 0
    if _isatty(sys.stdout):
        table = []
        for model in registry.models:
            ids = usable_ids(model)
            also = [i[: -len(model.id)] for i in ids[1:] if i.endswith(model.id)] if ids[0] == model.id else []
            end = model.lifecycle.end_of_life
            life = model.lifecycle.status + (f" (end {end})" if end else "")
            name = ids[0] + (f" (+{' '.join(also)})" if also else "") if ids else model.id
            table.append([name, model.family, model.distribution or "", life, _price(model), ", ".join(_tasks(model))])
        print(_table(["MODEL", "FAMILY", "PLUGIN", "LIFECYCLE", "USD/IMAGE", "TASKS"], table))
        return 0
    for model in registry.models:
        note = model.lifecycle.status + (
            f", end of life {model.lifecycle.end_of_life}" if model.lifecycle.end_of_life else ""
        )
        for model_id in usable_ids(model):
            print(f"{model_id}\t{model.distribution}\t{note}")
    return 0


def _price(model: Any) -> str:
    prices = sorted(float(v) for v in model.prices.values()) if model.prices else []
    if not prices:
        return "unknown"
    low, high = f"{prices[0]:.3f}".rstrip("0"), f"{prices[-1]:.3f}".rstrip("0")
    return low if low == high else f"{low}-{high}"


#: the body fields a task-based family chooses its task with
_TASK_FIELDS = ("taskType",)


def _task_field(schema: Any) -> tuple[str, list[str]] | None:
    props = schema.get("properties", {}) if isinstance(schema, dict) else {}
    for name in _TASK_FIELDS:
        enum = props.get(name, {}).get("enum") if isinstance(props.get(name), dict) else None
        if isinstance(enum, list):
            return name, [str(v) for v in enum]
    return None


def _tasks(model: Any) -> list[str]:
    """A task-based family's tasks (its taskType values), else the model's capabilities."""
    found = _task_field(model.param_schema)
    if found:
        return found[1]
    return sorted(model.capabilities)


def _schema(args: argparse.Namespace) -> int:
    from gesso.plugins import get_registry

    _, resolved = get_registry().resolve(args.model)
    model = resolved.model
    schema = dict(model.param_schema)
    if args.task:
        found = _task_field(schema)
        if found is None:
            print(f"gesso: error: {model.id} has no tasks to choose from (its body has no taskType)", file=sys.stderr)
            return 2
        field, tasks = found
        wanted = args.task.upper().replace("-", "_")
        if wanted not in tasks:
            print(f"gesso: error: --task must be one of {', '.join(tasks)} (got {args.task!r})", file=sys.stderr)
            return 2
        schema = _narrow(schema, field, wanted, model.id)
    print(json.dumps(schema, indent=2))
    return 0


def _narrow(schema: dict[str, Any], field: str, task: str, model_id: str) -> dict[str, Any]:
    """The body schema of one task: the task field fixed, and only the fields that task takes (its params
    object and the shared ones), with the rules the full schema gives that task."""
    props = schema.get("properties", {})
    allowed, required, extra = list(props), [field], []
    for rule in schema.get("allOf", []):
        when = rule.get("if", {}).get("properties", {}).get(field, {}) if isinstance(rule, dict) else {}
        if when.get("const") != task:
            continue
        then = rule.get("then", {})
        names = then.get("propertyNames", {}).get("enum")
        if isinstance(names, list):
            allowed = [n for n in allowed if n in names]
        required += [n for n in then.get("required", []) if n not in required]
        if "properties" in then:
            extra.append({"properties": then["properties"]})
    narrowed: dict[str, Any] = {
        "$schema": schema.get("$schema", "https://json-schema.org/draft/2020-12/schema"),
        "title": f"{model_id} {field} {task}",
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": {n: ({"const": task} if n == field else props[n]) for n in allowed},
    }
    if extra:
        narrowed["allOf"] = extra
    if "$defs" in schema:
        narrowed["$defs"] = schema["$defs"]
    return narrowed


def _cost(args: argparse.Namespace) -> int:
    from gesso.api import quote

    kwargs: dict[str, Any] = dict(args.param)
    kwargs.update(args.option)
    kwargs.update({k: v for k, v in {"size": args.size, "n": args.n, "quality": args.quality}.items() if v is not None})
    kwargs.update(_flag_options(args))
    if args.prices is not None:
        kwargs["prices"] = args.prices
    images = [Path(p) for p in args.image]
    if images:
        kwargs["image"] = images[0] if len(images) == 1 else images
    if args.mask:
        kwargs["mask"] = Path(args.mask)
    # the prompt never changes a price: without one, price the call with a stand-in prompt, or with none for
    # the models that take none
    prompts = [args.prompt] if args.prompt is not None else ["a prompt", None]
    first: GessoError | None = None
    for prompt in prompts:
        try:
            price = quote(args.model, prompt, operation=args.operation, **kwargs)
            break
        except InvalidRequestError as exc:
            first = first or exc
    else:
        assert first is not None
        raise first
    count = args.n or 1
    pricing = None if price is None else "deployment" if args.prices is not None else "public"
    if args.json:
        print(json.dumps({"model": args.model, "n": count, "cost": price, "pricing": pricing}))
        return 0
    by_tokens = args.prices is not None and any(key in args.prices for key in PER_TOKEN)
    unknown = ("unknown before the call (priced by the tokens its answer counts, at your price)" if by_tokens
               else "unknown (the model has no price)")  # fmt: skip
    shown = unknown if price is None else f"${price:.4f}"
    if args.prices is not None and price is not None:
        shown += " at your price"
    print(f"{shown} ({count} image{'s' if count != 1 else ''}, {args.model.rpartition('/')[2]}; nothing sent)")
    return 0


def _batch(args: argparse.Namespace) -> int:
    import shlex

    from gesso import bulk

    options = dict(args.option)
    options.update(_flag_options(args))
    if args.prices is not None:
        options["prices"] = args.prices
    if args.cache:
        from gesso.cache import open_store

        try:
            options["cache"] = open_store(args.cache)
        except ValueError as exc:
            print(f"gesso: error: --cache: {exc}", file=sys.stderr)
            return 2
    if args.concurrency < 1:
        print("gesso: error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    try:
        result = bulk.batch(
            args.input, args.output_dir, concurrency=args.concurrency, max_cost=args.max_cost, dry_run=args.dry_run,
            retry_failed=args.retry_failed, model=args.model, options=options, emulator=args.emulator,
            progress=not args.json, resume_hint=shlex.join(["gesso", *args.argv]),
        )  # fmt: skip
    except bulk.BatchError as exc:
        print(f"gesso: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else bulk.summary(result))
    if result.stopped == "interrupted":
        return 130
    if result.stopped == "budget" or (args.dry_run and result.stopped_before is not None):
        return 3
    return 1 if result.failures else 0


class _Spinner:
    """A spinner with the seconds elapsed on stderr while a call runs, only when stderr is a terminal; the
    line is cleared when the call ends (and while a warning is printed)."""

    _active: _Spinner | None = None
    _lock = threading.Lock()

    def __init__(self, stream: Any, label: str) -> None:
        self.stream, self.label = stream, label
        self.on = _isatty(stream)
        self.done = threading.Event()
        utf = (getattr(stream, "encoding", "") or "").lower().replace("-", "").startswith("utf8")
        self.frames = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏" if utf else "|/-\\"
        self.thread = threading.Thread(target=self._spin, name="gesso-spinner", daemon=True)

    def __enter__(self) -> _Spinner:
        if self.on:
            self.started = time.monotonic()
            _Spinner._active = self
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on:
            self.done.set()
            self.thread.join()
            with _Spinner._lock:
                _Spinner._active = None
                self._clear()

    def _spin(self) -> None:
        frame = 0
        while not self.done.wait(0.1):
            with _Spinner._lock:
                elapsed = time.monotonic() - self.started
                self.stream.write(f"\r{self.frames[frame % len(self.frames)]} {self.label} {elapsed:.1f}s")
                self.stream.flush()
            frame += 1

    def _clear(self) -> None:
        self.stream.write("\r\033[K")
        self.stream.flush()

    @classmethod
    @contextlib.contextmanager
    def pause(cls) -> Any:
        """Print something else on stderr: the spinner's line is cleared first (it redraws itself)."""
        with cls._lock:
            if cls._active is not None:
                cls._active._clear()
            yield


if __name__ == "__main__":
    sys.exit(main())
