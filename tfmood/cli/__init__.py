"""The `tfmood` command line: one sub-command per module in this package.

Each module defines `register(subparsers)`, which adds its parser and sets `func` to a function
taking the parsed arguments. The commands are thin: they call library functions in `tfmood`.
TensorFlow is imported inside the commands, so `tfmood --help` stays fast. Its native log lines
are kept off the terminal unless `--verbose` is given or the user sets `TF_CPP_MIN_LOG_LEVEL`.
"""

import argparse
import importlib
import os
import pkgutil
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tfmood",
        description="Mood and theme recognition in music: train, evaluate, export.",
    )
    parser.add_argument("--verbose", action="store_true",
                        help="show TensorFlow's native log lines (hidden by default)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(subparsers)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # Before any command module is imported: some import TensorFlow, which logs at import.
    if "--verbose" not in argv and "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        from tfmood.cli._quiet import filter_native_logs

        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        filter_native_logs()
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
