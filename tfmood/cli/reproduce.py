"""`tfmood reproduce`: the paper's Table 1 on MTG-Jamendo, the published numbers beside (resumable)."""

# Command-line option -> ReproduceConfig field, where the names differ.
FIELD_OF_OPTION = {"out": "out_dir"}


def register(subparsers):
    from tfmood.experiment import PRESET_ORDER
    from tfmood.reproduce import ReproduceConfig
    from tfmood.train.fit import STRATEGIES, Width
    from tfmood.train.precision import PRECISIONS

    defaults = ReproduceConfig()
    parser = subparsers.add_parser(
        "reproduce",
        help="the paper's Table 1 on MTG-Jamendo: train the six presets, test, fuse, compare",
        description="Train the six presets with the paper's settings on MTG-Jamendo split-0, "
        "test them, late-fuse them and print Table 1 with the paper's numbers beside. A rerun "
        "continues where the last one stopped.",
    )
    parser.add_argument("--config", help="YAML file of the settings below (options win)")

    def option(flag, help_text, **kwargs):
        name = flag[2:].replace("-", "_")
        default = getattr(defaults, FIELD_OF_OPTION.get(name, name))
        shown = " ".join(default) if isinstance(default, tuple) and name == "presets" else default
        parser.add_argument(flag, default=None, help=f"{help_text} (default: {shown})", **kwargs)

    option("--splits", "folder of autotagging_moodtheme-{train,validation,test}.tsv (split-0)")
    option("--data", "melspec root (NN/ID.npy) or, with --source audio, audio root (NN/ID.mp3)")
    option("--source", "what --data holds", choices=("npy", "audio"))
    option("--out", "output folder (a rerun resumes there)")
    option("--presets", "models to train", nargs="+", choices=PRESET_ORDER)
    option("--epochs", "most epochs per model", type=int)
    option("--patience", "early-stopping patience on validation ROC-AUC", type=int)
    option("--batch-size", "examples per step", type=int)
    option("--learning-rate", "Adam learning rate", type=float)
    option("--n-frames", "first frames of every track", type=int)
    option("--width", "channel multiplier: one number or one per block (a,b,c,d,e)", type=Width)
    option("--dropout", "dropout before the dense layer", type=float)
    option("--seed", "seed of weights and shuffling", type=int)
    option("--strategy", "tf.distribute strategy of training", choices=STRATEGIES)
    option("--precision", "training precision (mixed_float16 needs a GPU)", choices=PRECISIONS)
    option("--cache-mb", "most MB of examples a split caches in memory", type=int)
    parser.add_argument("--skip-bad", action="store_const", const=True, default=None,
                        help="leave out (and list) bad data files instead of stopping")
    parser.add_argument("--no-tensorboard", dest="tensorboard", action="store_const",
                        const=False, default=None, help="write no TensorBoard logs")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.cli._config_options import config_of
    from tfmood.reproduce import ReproduceConfig, run_reproduce

    run_reproduce(config_of(ReproduceConfig, args, FIELD_OF_OPTION))
    return 0
