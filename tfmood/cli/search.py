"""`tfmood search`: keras-tuner architecture search under budgets, report, best model retrained.

Distributed mode: run the same command with KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT set, once as the chief and once per worker (see training/SEARCH.md).
"""

# Options that override the config file; (flag, type, help).
OVERRIDES = (
    ("tuner", str, "random, bayesian or hyperband"),
    ("objective", str, "val_roc_auc or val_pr_auc"),
    ("max_trials", int, "trained candidates at most"),
    ("epochs", int, "epochs per trial (hyperband: the most)"),
    ("directory", str, "where the trials go (a rerun resumes there)"),
    ("project_name", str, "name of the search under --directory"),
    ("max_gflops", float, "GFLOPs budget at 96 x 1400"),
    ("max_params", int, "trainable-parameter budget"),
    ("max_peak_activation_mb", float, "peak activation memory budget (MiB, one example)"),
    ("final_epochs", int, "epochs of the best candidate's retraining (0: none)"),
    ("seed", int, "random seed"),
    ("verbose", int, "Keras progress bar mode (0, 1, 2)"),
)


def register(subparsers):
    parser = subparsers.add_parser(
        "search",
        help="architecture search (where attention and AReLU go) under GFLOPs/params/memory "
        "budgets, with a report and the best model retrained",
    )
    parser.add_argument(
        "--config", required=True, help="YAML config (training/configs/search.yaml)"
    )
    group = parser.add_argument_group("config overrides (default: the config file's values)")
    for name, kind, text in OVERRIDES:
        flag = "--" + name.replace("_", "-")
        group.add_argument(flag, dest=name, type=kind, default=None, help=text)
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.train.search import SearchConfig, run_search

    overrides = {name: getattr(args, name) for name, _, _ in OVERRIDES}
    config = SearchConfig.from_yaml(args.config, **overrides)
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
