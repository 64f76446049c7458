"""Train one tfmood model with Keras `fit`, then test its best checkpoint.

Edit the setup block below, or pass the same settings on the command line: every `TrainConfig`
field is an option, as for `tfmood train` (`--epochs 10`, `--strategy mirrored`, ...).

    python3 training/fit.py --config training/configs/sa3.yaml --epochs 10 \\
        --test-tsv data/autotagging_moodtheme-test.tsv

The script does what `tfmood train` and then `tfmood test` do, with the same library functions:
`tfmood.train.fit.train` (Adam + binary cross-entropy, the best model by validation ROC-AUC,
early stopping, resume after an interruption) and `tfmood.inference.test_model` (the MediaEval
metrics of the best model on the test split). Re-running it resumes an interrupted run; a
finished run (its result.json present) is not trained again.
"""

import argparse
import json
import os

import keras

from tfmood.cli.train import add_config_overrides, overrides_of
from tfmood.inference import test_model
from tfmood.metrics import format_summary
from tfmood.train.config import load_config
from tfmood.train.fit import TrainConfig, is_chief, train

# --------------------------------------------------------------------------------------------
# Setup: the config file, your changes to it, and the test split (None: no test).

CONFIG = "training/configs/baseline.yaml"
OVERRIDES = {}  # e.g. {"epochs": 10, "batch_size": 32, "out_dir": "runs/baseline-short"}
TEST_TSV = None  # e.g. "data/autotagging_moodtheme-test.tsv"
TEST_ROOT = None  # test data root (default: the config's validation_root, else train_root)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG, help=f"YAML config (default: {CONFIG})")
    parser.add_argument("--test-tsv", default=TEST_TSV, help="test split file (default: no test)")
    parser.add_argument("--test-root", default=TEST_ROOT, help="test data root or shard dir")
    add_config_overrides(parser)
    return parser.parse_args()


args = parse_args()
config = load_config(TrainConfig, args.config, **{**OVERRIDES, **overrides_of(args)})
keras.utils.set_random_seed(config.seed)

# --------------------------------------------------------------------------------------------
# Train: fit with validation ROC-AUC and PR-AUC every epoch; best.keras, history.csv,
# curves.png and result.json go to config.out_dir (TensorBoard logs to out_dir/logs).

result = train(config)
print(json.dumps(result.as_dict(), indent=2))

# --------------------------------------------------------------------------------------------
# Test the best model (only one process of a multi-worker run does it).

if args.test_tsv and is_chief(config.strategy):
    test_root = args.test_root or config.validation_root or config.train_root
    test_dir = os.path.join(config.out_dir, "test")
    evaluation = test_model(
        result.best_model,
        args.test_tsv,
        test_root,
        test_dir,
        source=config.source,
        n_frames=config.n_frames,
        batch_size=config.batch_size,
        skip_bad=config.skip_bad,
    )
    print(format_summary(evaluation, per_tag=False))
    print(f"test predictions and report written to {test_dir}")
