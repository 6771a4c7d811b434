"""``livedrag models list|add|check``: show, add (converting safely) and validate library entries."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = """\
A model library is a folder of model folders, DIR/<name>/ with card.json, generator.safetensors
and optionally predictor.safetensors and encoder.safetensors. The embedded SynthFaces model is
always listed. `add` converts NVIDIA .pkl and rosinality .pt files with the safe converters (no
code in them runs) and refuses a predictor or encoder made for another generator.
See docs/models.md.
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list, add and check the models of a model library",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    ls = msub.add_parser("list", help="a table of the models: name, resolution, modes, licence, status")
    ls.add_argument("--models", default=None, metavar="DIR", help="library folder (default: none)")
    ls.set_defaults(func=run_list)

    add = msub.add_parser("add", help="add a generator (.safetensors, NVIDIA .pkl, rosinality .pt)")
    add.add_argument("src", help="generator: livedrag .safetensors, NVIDIA .pkl or rosinality .pt")
    add.add_argument("--models", required=True, metavar="DIR", help="library folder (created if absent)")
    add.add_argument("--name", default=None, help="model name, the folder's name (default: SRC's stem)")
    add.add_argument("--licence", default="unknown", help="the weights' licence, for the card")
    add.add_argument("--source", default=None, help="where the weights come from (default: SRC's name)")
    add.add_argument("--predictor", default=None, help="predictor .safetensors trained for this generator")
    add.add_argument("--encoder", default=None, help="encoder .safetensors trained for this generator")
    add.add_argument("--half", action="store_true", help="store converted weights as float16")
    add.set_defaults(func=run_add)

    chk = msub.add_parser("check", help="validate entries; exit 0 when all are fine, 2 otherwise")
    chk.add_argument("--models", default=None, metavar="DIR", help="library folder (default: none)")
    chk.add_argument("name", nargs="?", default=None, help="one model (default: all)")
    chk.set_defaults(func=run_check)


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def run_list(args: argparse.Namespace) -> int:
    from server.models import ModelLibrary

    lib = ModelLibrary(args.models)
    rows = [["NAME", "RES", "MODES", "LICENCE", "SOURCE", "STATUS"]]
    problems = []
    for entry in lib.entries():
        result = lib.check(entry.name)
        card = entry.card
        status = "ok" if result.ok else "error"
        if result.ok and result.notes:
            status = "ok (" + ", ".join(m for m in card.modes if m not in result.modes) + " off)"
        rows.append(
            [
                entry.name + (" (default)" if entry.builtin else ""),
                str(card.resolution) if card else "?",
                ",".join(result.modes if result.ok else (card.modes if card else ())) or "-",
                card.licence if card else "?",
                card.source if card else "?",
                status,
            ]
        )
        problems += result.errors + result.notes
    print(_table(rows))
    for line in problems:  # on stderr: stdout stays the table, for scripts that read it
        print(f"  {line}", file=sys.stderr)
    return 0


def run_add(args: argparse.Namespace) -> int:
    from server.models import ModelLibrary

    lib = ModelLibrary(args.models)
    entry = lib.add(
        args.src,
        name=args.name,
        licence=args.licence,
        source=args.source,
        predictor=args.predictor,
        encoder=args.encoder,
        half=args.half,
    )
    card = entry.card
    print(
        f"added {entry.name} to {args.models}: {card.resolution} px, modes {', '.join(card.modes)}, "
        f"licence {card.licence}, source {card.source}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from server.models import ModelLibrary

    lib = ModelLibrary(args.models)
    names = [args.name] if args.name else lib.names()
    bad = 0
    for name in names:
        result = lib.check(name)
        if result.ok:
            print(f"{name}: ok ({', '.join(result.modes)})")
            for note in result.notes:
                print(f"  note: {note}")
        else:
            bad += 1
            print(f"{name}: FAILED")
            for err in result.errors:
                print(f"  {err}")
    if bad:
        print(f"{bad} of {len(names)} models failed the check")
        return 2
    return 0
