"""`tfmood train`: fit one model from a YAML config; every config field can be overridden."""

import json


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def boolean(text: str) -> bool:
    """A command-line truth value: 1/true/yes/on or 0/false/no/off (any case)."""
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def add_config_overrides(parser) -> None:
    """One option per TrainConfig field (e.g. --batch-size, --learning-rate, --preset)."""
    from tfmood.train.fit import field_types

    group = parser.add_argument_group("config overrides (default: the config file's values)")
    for name, kind in field_types().items():
        converter = boolean if kind is bool else kind
        group.add_argument(
            _flag(name), dest=name, type=converter, default=None, metavar=kind.__name__.upper()
        )


def register(subparsers):
    parser = subparsers.add_parser(
        "train", help="train one model (Adam, BCE, early stopping on validation ROC-AUC)"
    )
    parser.add_argument("--config", help="YAML config (training/configs/*.yaml)")
    add_config_overrides(parser)
    parser.set_defaults(func=run)


def overrides_of(args) -> dict:
    from tfmood.train.fit import field_types

    return {name: getattr(args, name) for name in field_types() if getattr(args, name) is not None}


def run(args) -> int:
    from tfmood.train.fit import TrainConfig, train

    overrides = overrides_of(args)
    if args.config:
        config = TrainConfig.from_yaml(args.config, **overrides)
    else:
        config = TrainConfig(**overrides)
    result = train(config)
    print(json.dumps(result.as_dict(), indent=2))
    return 0
