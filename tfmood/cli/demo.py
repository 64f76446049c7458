"""`tfmood demo`: the paper's experiment end to end on the synthetic corpus (resumable)."""

# Command-line option -> DemoConfig field, where the names differ.
FIELD_OF_OPTION = {"out": "out_dir"}


def register(subparsers):
    from tfmood.demo import DemoConfig
    from tfmood.train.fit import Width

    defaults = DemoConfig()
    parser = subparsers.add_parser(
        "demo", help="generate a synthetic corpus, train the six presets, evaluate, fuse, export"
    )
    parser.add_argument("--config", help="YAML file of the settings below (options win)")

    def option(flag, help_text="", **kwargs):
        name = flag[2:].replace("-", "_")
        default = getattr(defaults, FIELD_OF_OPTION.get(name, name))
        if isinstance(default, tuple):
            default = " ".join(str(value) for value in default)
        shown = f"{help_text} (default: {default})" if help_text else f"default: {default}"
        parser.add_argument(flag, default=None, help=shown, **kwargs)

    option("--out", "output folder (resumes there)")
    option("--tracks", type=int)
    option("--seconds", type=float)
    option("--seed", type=int)
    option("--presets", nargs="+")
    option("--n-frames", type=int)
    option("--width", "channel multiplier: one number or one per block (a,b,c,d,e)", type=Width)
    option("--epochs", type=int)
    option("--patience", type=int)
    option("--batch-size", type=int)
    option("--learning-rate", type=float)
    option("--lr-schedule", choices=("constant", "cosine"))
    parser.add_argument("--no-export", dest="export", action="store_const", const=False,
                        default=None, help="skip the TFLite export")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.cli._config_options import config_of
    from tfmood.demo import DemoConfig, run_demo

    run_demo(config_of(DemoConfig, args, FIELD_OF_OPTION))
    return 0
