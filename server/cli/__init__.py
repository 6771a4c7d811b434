"""`livedrag` command line: one module per subcommand, each exposing ``register(subparsers)``."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# name -> module under server.cli; each module defines register(subparsers) that adds its parser
# and sets ``func`` (called with the parsed args, returns an exit code).
COMMANDS = ["serve", "sample", "drag", "convert", "synthfaces", "invert", "models", "train"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="livedrag", description="Real-time collaborative drag editing on StyleGAN2."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f"server.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"server.cli.{name}":
                continue  # command not part of this build
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError) as e:  # user errors: one clear line, no traceback
        print(f"livedrag {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
