"""The ``storebench`` console script.

Subcommands each have ``--help``.  ``verify PATH`` checks every sample of a
dataset against the checksums stored when it was written.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

def _cmd_verify(args: argparse.Namespace) -> int:
    import formats

    status = 0
    for path in args.paths:
        try:
            manifest = formats.read_manifest(Path(path))
            if getattr(formats.available().get(manifest["format"]), "executes_code", False):
                print(f"warning: {path} is a {manifest['format']} dataset: reading it unpickles "
                      "Python objects, which can run arbitrary code. Only verify datasets you trust.",
                      file=sys.stderr)
            with formats.open_dataset(path) as r:
                bad = r.verify()
        except (formats.DatasetError, FileNotFoundError, ImportError) as err:
            print(f"{path}: ERROR {err}", file=sys.stderr)
            status = 2
            continue
        if bad:
            status = max(status, 1)
            print(f"{path}: {len(bad)} of {len(r)} samples damaged")
            for key in bad[: args.max_keys]:
                print(f"  {key}")
            if len(bad) > args.max_keys:
                print(f"  ... and {len(bad) - args.max_keys} more")
        else:
            print(f"{path}: OK, {len(r)} samples ({manifest['format']})")
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storebench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("verify", help="check every sample of datasets against their stored checksums",
                       description="Exit status: 0 all good, 1 damaged samples, 2 not a readable dataset.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="dataset directories")
    p.add_argument("--max-keys", type=int, default=20, help="damaged keys to list per dataset")
    p.set_defaults(func=_cmd_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
