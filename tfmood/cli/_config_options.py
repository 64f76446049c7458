"""A command's config from its `--config` file and its options (the options given winning)."""

import dataclasses


def overrides_of(config_class, args, field_of_option: dict) -> dict:
    """The `config_class` fields given on the command line (options left at None are not).

    Args:
        config_class: the dataclass config.
        args: the parsed arguments.
        field_of_option: option dest -> field name, where the names differ.
    """
    fields = {field.name: field for field in dataclasses.fields(config_class)}
    overrides = {}
    for name, value in vars(args).items():
        field = field_of_option.get(name, name)
        if field in fields and value is not None:
            overrides[field] = tuple(value) if isinstance(value, list) else value
    return overrides


def config_of(config_class, args, field_of_option: dict):
    """The config of the command line: the `--config` file's, or the defaults', with the options
    given winning (through the one config loader, `tfmood.train.config`)."""
    from tfmood.train.config import load_config, make_config

    overrides = overrides_of(config_class, args, field_of_option)
    if args.config:
        return load_config(config_class, args.config, **overrides)
    return make_config(config_class, overrides, "command line")
