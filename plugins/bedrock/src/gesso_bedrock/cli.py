"""``gesso emulator``: serve the Bedrock Runtime emulator (added to the ``gesso`` command line by this plugin)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any


def _app_profile(text: str) -> tuple[str, str]:
    key, sep, model = text.partition("=")
    if not sep or not key or not model:
        raise argparse.ArgumentTypeError(f"expected PROFILE=MODEL_ID, got {text!r}")
    return key, model


def _checked(read: Callable[[Any, str], Any]) -> Callable[[str], Any]:
    """An argparse type: ``read(gesso_bedrock.emulator.faults, text)`` (the module imported when an option is
    read), its ValueError a usage error naming the option."""

    def convert(text: str) -> Any:
        from gesso_bedrock.emulator import faults

        try:
            return read(faults, text)
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def add_emulator_command(subcommands: Any) -> None:
    emu = subcommands.add_parser("emulator", help="serve the local Bedrock Runtime emulator")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=_checked(lambda f, text: f.number(text, int, 0, 65535)), default=4010)
    emu.add_argument(
        "--app-profile",
        action="append",
        type=_app_profile,
        default=[],
        metavar="PROFILE=MODEL_ID",
        help="map an application inference profile (id or ARN) to the model it serves. Repeatable.",
    )
    emu.add_argument(
        "--fault",
        action="append",
        type=_checked(lambda f, text: f.parse_spec(text)),
        default=[],
        metavar="KIND[:key=value,...]",
        help="inject a fault: KIND is latency, throttle, not_ready, error, unavailable, model_error, timeout, eol or "
        "guardrail (a guardrail intervening, on requests that name one); "
        "keys: model, count (first N requests), rate (fraction), seconds, status, code, message. "
        "E.g. throttle:count=2, error:rate=0.1,status=503, eol:model=amazon.nova-canvas-v1:0. Repeatable.",
    )
    emu.add_argument(
        "--latency",
        type=_checked(lambda f, text: f.number(text, float, 0, f.MAX_SECONDS)),
        metavar="SECONDS",
        help="add this latency to every request (0 to 3600)",
    )
    emu.add_argument(
        "--fault-seed",
        type=_checked(lambda f, text: f.number(text, int)),
        help="seed for rate-based faults (reproducible runs)",
    )
    emu.add_argument(
        "--workers",
        type=_checked(lambda f, text: f.number(text, int, 0)),
        default=0,
        help="threads for models' emulations; 0 (the default) runs them on the server's event loop, the fastest",
    )
    emu.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM); needs --tls-key")
    emu.add_argument("--tls-key", help="the certificate's private key (PEM)")
    emu.add_argument(
        "--verify-signatures",
        action="store_true",
        help="recompute SigV4 signatures, accepting only the emulator's own key (see docs/emulator.md)",
    )
    emu.set_defaults(handler=run_emulator)


def run_emulator(args: argparse.Namespace) -> int:
    from gesso_bedrock.emulator import EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY, Emulator
    from gesso_bedrock.emulator.faults import Fault

    faults = list(args.fault)
    if args.latency:
        faults.insert(0, Fault(kind="latency", seconds=args.latency))
    if bool(args.tls_cert) != bool(args.tls_key):
        print("gesso: error: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    emulator = Emulator(
        args.host,
        args.port,
        credentials={EMULATOR_ACCESS_KEY: EMULATOR_SECRET_KEY} if args.verify_signatures else None,
        application_profiles=dict(args.app_profile),
        faults=faults,
        fault_seed=args.fault_seed,
        tls=(args.tls_cert, args.tls_key) if args.tls_cert else None,
        workers=args.workers,
    )
    print(f"gesso Bedrock emulator on {emulator.url} (Ctrl-C to stop)", flush=True)
    emulator.serve_forever()
    return 0
