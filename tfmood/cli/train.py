"""`tfmood train`: fit one model from a YAML config; every config field can be overridden."""

import json


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def option_type(hint):
    """The argparse `type` of a config field: its text parsed as the field's type hint
    (`tfmood.train.config.parse_text`: booleans as 1/true/yes/on or 0/false/no/off, lists
    comma-separated)."""
    from tfmood.train.config import parse_text, plain_type

    def parse(text: str):
        return parse_text(hint, text)

    kind = plain_type(hint)
    name = "list" if kind in (list, tuple) else getattr(kind, "__name__", "value")
    parse.__name__ = name  # argparse's error and the option's metavar say it
    return parse


def add_config_overrides(parser, config_class=None, helps=None) -> None:
    """One option per config field (e.g. --batch-size, --learning-rate, --preset).

    Args:
        parser: the argparse parser.
        config_class: the dataclass config (default: `TrainConfig`).
        helps: {field: help text} to offer only these fields (default: every field).
    """
    group = parser.add_argument_group("config overrides (default: the config file's values)")
    for name, hint in _types(config_class).items():
        if helps is not None and name not in helps:
            continue
        kind = option_type(hint)
        group.add_argument(
            _flag(name), dest=name, type=kind, default=None, metavar=kind.__name__.upper(),
            help=(helps or {}).get(name),
        )  # fmt: skip


def _types(config_class) -> dict:
    from tfmood.train.config import field_types
    from tfmood.train.fit import TrainConfig

    return field_types(config_class or TrainConfig)


def register(subparsers):
    parser = subparsers.add_parser(
        "train", help="train one model (Adam, BCE, early stopping on validation ROC-AUC)"
    )
    parser.add_argument("--config", help="YAML config (training/configs/*.yaml)")
    add_config_overrides(parser)
    parser.set_defaults(func=run)


def overrides_of(args, config_class=None) -> dict:
    """The config fields given on the command line (the options left out are None)."""
    return {
        name: getattr(args, name)
        for name in _types(config_class)
        if getattr(args, name, None) is not None
    }


def run(args) -> int:
    from tfmood.train.config import load_config, make_config
    from tfmood.train.fit import TrainConfig, train

    overrides = overrides_of(args)
    if args.config:
        config = load_config(TrainConfig, args.config, **overrides)
    else:
        config = make_config(TrainConfig, overrides, "command line")
    result = train(config)
    print(json.dumps(result.as_dict(), indent=2))
    return 0
