"""The `tfmood` command line: one sub-command per module in this package.

Each module defines `register(subparsers)`, which adds its parser and sets `func` to a function
taking the parsed arguments. The commands are thin: they call library functions in `tfmood`.
TensorFlow is imported inside the commands, so `tfmood --help` stays fast.
"""

import argparse
import importlib
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmood",
        description="Mood and theme recognition in music: train, evaluate, export.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except (ValueError, FileNotFoundError, KeyError) as error:
        # Bad input is reported as one clear line, not a traceback.
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        print(f"tfmood {args.command}: error: {message}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":
    sys.exit(main())
