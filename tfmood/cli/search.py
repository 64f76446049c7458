"""`tfmood search`: keras-tuner architecture search under budgets, report, best model retrained.

Distributed mode: run the same command with KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT set, once as the chief and once per worker (see training/SEARCH.md).
"""

# Config fields offered as options that override the config file: {field: help}. Their types
# are the SearchConfig fields' (tfmood.train.config).
OVERRIDES = {
    "tuner": "random, bayesian or hyperband",
    "objective": "val_roc_auc or val_pr_auc",
    "max_trials": "trained candidates at most",
    "epochs": "epochs per trial (hyperband: the most)",
    "directory": "where the trials go (a rerun resumes there)",
    "project_name": "name of the search under --directory",
    "max_gflops": "GFLOPs budget at 96 x 1400",
    "max_params": "trainable-parameter budget",
    "max_peak_activation_mb": "peak activation memory budget (MiB, one example)",
    "final_epochs": "epochs of the best candidate's retraining (0: none)",
    "seed": "random seed",
    "verbose": "Keras progress bar mode (0, 1, 2)",
}


def add_search_overrides(parser) -> None:
    """The `OVERRIDES` options, each parsed as its SearchConfig field's type."""
    group = parser.add_argument_group("config overrides (default: the config file's values)")
    for name, text in OVERRIDES.items():
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, dest=name, type=_field_parser(name), default=None, help=text)


def _field_parser(name: str):
    """The text of `--NAME` as SearchConfig's field `name`, its type looked up on use (building
    the parser imports no keras-tuner)."""

    def parse(text: str):
        from tfmood.train.config import field_types, parse_text
        from tfmood.train.search import SearchConfig

        return parse_text(field_types(SearchConfig)[name], text)

    parse.__name__ = name
    return parse


def search_overrides_of(args) -> dict:
    """The `OVERRIDES` fields given on the command line."""
    return {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}


def register(subparsers):
    parser = subparsers.add_parser(
        "search",
        help="architecture search (where attention and AReLU go) under GFLOPs/params/memory "
        "budgets, with a report and the best model retrained",
    )
    parser.add_argument(
        "--config", required=True, help="YAML config (training/configs/search.yaml)"
    )
    add_search_overrides(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.train.config import load_config
    from tfmood.train.search import SearchConfig, run_search

    config = load_config(SearchConfig, args.config, **search_overrides_of(args))
    report = run_search(config)
    if report is None:
        print("worker finished: the chief writes the report")
        return 0
    print(f"report: {config.report_path}/report.md ({len(report['trials'])} trials, "
          f"{len(report['rejected'])} rejected before training)")
    print(f"best trial: {report['best_trial']}; Pareto front: {report['pareto_front']}")
    if report.get("best_model"):
        print(f"best model: {report['best_model']['model']}")
    return 0
