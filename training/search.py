"""Search the VGG-ish family with keras-tuner: which blocks get attention, which get AReLU.

Edit the setup block below, or pass the same settings on the command line, as for
`tfmood search` (`--tuner bayesian`, `--max-trials 30`, `--max-gflops 3.32`, ...):

    python3 training/search.py --config training/configs/search.yaml --epochs 5

The script does what `tfmood search` does, step by step, with the same library functions of
`tfmood.train.search`: candidates over the GFLOPs / parameter / peak-memory budget (computed at
96 x 1400) are rejected by the oracle before any training; every trial is trained with the
validation ROC-AUC and PR-AUC logged each epoch; the report (Markdown, JSON, Pareto plot of the
objective against GFLOPs, TFLite float32 latency) and the retrained best model (best.keras) go
to `directory/project_name/report`. Re-running it resumes the search where it stopped.

Distributed: run it once with KERASTUNER_TUNER_ID=chief and once per worker with
KERASTUNER_TUNER_ID=tuner0, tuner1, ..., all with KERASTUNER_ORACLE_IP and
KERASTUNER_ORACLE_PORT pointing at the chief and the same `directory` (training/SEARCH.md).
"""

import argparse
import json

import keras

from tfmood.cli.search import add_search_overrides, search_overrides_of
from tfmood.train.config import load_config
from tfmood.train.search import (
    SearchConfig,
    distributed_role,
    make_hypermodel,
    make_tuner,
    retrain_best,
    search,
    search_datasets,
    write_report,
)

# --------------------------------------------------------------------------------------------
# Setup: the config file and your changes to it.

CONFIG = "training/configs/search.yaml"
CHANGES = {}  # e.g. {"tuner": "hyperband", "epochs": 27, "max_gflops": 3.32}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG, help=f"YAML config (default: {CONFIG})")
    add_search_overrides(parser)
    return parser.parse_args()


args = parse_args()
config = load_config(SearchConfig, args.config, **{**CHANGES, **search_overrides_of(args)})
keras.utils.set_random_seed(config.seed)
role = distributed_role()  # "single", or "chief" / "worker" of a distributed search
print(f"search: {config.tuner}, objective {config.objective}, budget {config.budget()}, {role}")

# --------------------------------------------------------------------------------------------
# Data: the training pipeline's datasets (the chief of a distributed search needs none).

data = None if role == "chief" else search_datasets(config)

# --------------------------------------------------------------------------------------------
# Hypermodel and tuner: the search space, the budgeted oracle, resume from config.directory.

hypermodel = make_hypermodel(config)
tuner = make_tuner(config, hypermodel)
tuner.search_space_summary()

# --------------------------------------------------------------------------------------------
# Search: trials over budget never start; finished trials are not run again.

search(tuner, config, data)
if role == "worker":
    print("worker finished: the chief writes the report")
    raise SystemExit(0)

# --------------------------------------------------------------------------------------------
# Report: every trial, the rejected candidates, the Pareto front; then the best retrained.

tuner.results_summary(num_trials=3)
report = write_report(tuner, hypermodel, config)
print(f"report written to {config.report_path} (report.md, report.json, pareto.png)")
print(f"Pareto front (trial ids): {report['pareto_front']}, best trial: {report['best_trial']}")
best = retrain_best(report, hypermodel, config, data)
print(json.dumps(best, indent=2))
