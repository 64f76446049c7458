"""The paper's Table 1 on MTG-Jamendo, with the published numbers beside the reproduced ones.

Takes a checkout of the data set (the split-0 files `autotagging_moodtheme-{train,validation,
test}.tsv` and the official melspecs `NN/ID.npy`, or the audio `NN/ID.mp3`) and runs the paper's
experiment with its settings (the defaults of `tfmood.train.fit.TrainConfig`: batch 16, Adam 1e-4,
up to 100 epochs, early stopping on validation ROC-AUC with patience 35, the first 1400 frames):
the six presets, each tested on the test split, and the paper's two late fusions, in a table with
the paper's ROC-AUC and PR-AUC and the differences. The training, testing and fusion are
`tfmood.experiment`, the runner the demo uses.

Every split is first written once as TFRecord shards of its first `n_frames` frames: writing them
checks every file (a bad one is an error naming it, or with `skip_bad` is left out and listed), so
the plan stated before training counts the tracks that will really be used, and every epoch of
every preset then reads 0.5 MB per track instead of a whole track's melspec or audio. A rerun
reuses the shards, the finished presets and their tests, and resumes an interrupted training
from its backup. Files under `out_dir`: `shards/`, `plan.json`, `config.yaml` (the settings, for
`--config`), then those of `tfmood.experiment`.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

from tfmood import atomic, experiment
from tfmood.experiment import PRESET_ORDER, SPLITS
from tfmood.train.fit import STRATEGIES, TrainConfig, Width

SPLIT_FILE = "autotagging_moodtheme-{split}.tsv"
SOURCES = ("npy", "audio")

# Table 1 of the paper (MediaEval 2020 test set): model -> (ROC-AUC, PR-AUC). The paper has no
# row for sa3-arelu.
PAPER_TABLE1 = {
    "baseline": (0.725, 0.107),
    "sa3": (0.716, 0.108),
    "sa4": (0.723, 0.108),
    "sa5": (0.716, 0.101),
    "arelu": (0.728, 0.107),
    experiment.fusion_name(("sa3", "arelu")): (0.732, 0.114),
    experiment.fusion_name(("baseline", "sa3", "arelu")): (0.735, 0.118),
}


@dataclasses.dataclass
class ReproduceConfig:
    """A reproduction run; the training defaults are the paper's (those of `TrainConfig`).

    Args:
        splits: the folder of the split files `autotagging_moodtheme-{train,validation,test}.tsv`
            (MTG-Jamendo `data/splits/split-0`).
        data: the melspec root (source "npy": PATH with `.npy`, i.e. `NN/ID.npy`) or the audio
            root (source "audio": PATH, i.e. `NN/ID.mp3`).
        source: "npy" or "audio".
        out_dir: where everything goes (a rerun resumes there).
        presets: the models to train, in table order.
        epochs: most epochs per model.
        patience: early-stopping patience on validation ROC-AUC.
        batch_size: examples per step.
        learning_rate: Adam learning rate.
        n_frames: the first frames of every track used (shorter tracks tiled).
        width: channel multiplier of the models (1.0: the paper's).
        dropout: dropout before the dense layer.
        seed: seed of weights and shuffling.
        strategy: "none", "mirrored" or "multiworker" (see `TrainConfig.strategy`).
        precision: "float32" (the paper), "mixed_float16" or "mixed_bfloat16" (see
            `TrainConfig.precision`).
        skip_bad: leave out (and list) bad data files instead of stopping at the first one.
        tensorboard: write TensorBoard logs of every training.
        cache_mb: most MB of examples a split caches in memory (see `TrainConfig.cache_mb`).
    """

    splits: str = "mtg-jamendo-dataset/data/splits/split-0"
    data: str = "melspecs"
    source: str = "npy"
    out_dir: str = "reproduce_output"
    presets: tuple[str, ...] = PRESET_ORDER
    epochs: int = TrainConfig.epochs
    patience: int = TrainConfig.patience
    batch_size: int = TrainConfig.batch_size
    learning_rate: float = TrainConfig.learning_rate
    n_frames: int = TrainConfig.n_frames
    width: Width = TrainConfig.width
    dropout: float = TrainConfig.dropout
    seed: int = TrainConfig.seed
    strategy: str = TrainConfig.strategy
    precision: str = TrainConfig.precision
    skip_bad: bool = False
    tensorboard: bool = TrainConfig.tensorboard
    cache_mb: Optional[int] = TrainConfig.cache_mb

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {self.source!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        unknown = [p for p in self.presets if p not in PRESET_ORDER]
        if unknown or not self.presets:
            raise ValueError(f"presets must be among {PRESET_ORDER}, got {list(self.presets)}")
        self.presets = tuple(self.presets)
        self.width = Width(self.width)


@dataclasses.dataclass
class Plan:
    """What a run will do, stated before it trains.

    Args:
        tracks: split -> the tracks used (after the file check).
        left_out: split -> the tracks whose files were bad and left out (`skip_bad`).
        batch_size: examples per step.
        steps_per_epoch: training steps of one epoch.
        epochs: most epochs per preset.
        patience: early-stopping patience.
        presets: preset -> "finished", "resumes after epoch N" or "to train".
    """

    tracks: dict
    left_out: dict
    batch_size: int
    steps_per_epoch: int
    epochs: int
    patience: int
    presets: dict

    def lines(self) -> list[str]:
        """The plan in words, one line each."""
        tracks = ", ".join(f"{split} {self.tracks[split]:,}" for split in SPLITS)
        left_out = sum(self.left_out.values())
        steps = self.steps_per_epoch * self.epochs
        status = ", ".join(f"{preset} {state}" for preset, state in self.presets.items())
        return [
            f"tracks: {tracks} ({left_out} left out as bad files)",
            (f"steps per epoch: {self.steps_per_epoch:,} (batch {self.batch_size}); epochs: up "
             f"to {self.epochs} (early stopping after {self.patience} without a better "
             f"validation ROC-AUC), at most {steps:,} steps per preset"),
            f"presets: {status}",
        ]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _log(message: str) -> None:
    print(f"[tfmood reproduce] {message}", flush=True)


def split_files(splits_dir: str) -> dict:
    """split -> its split file in `splits_dir`; FileNotFoundError names a missing one."""
    paths = {split: os.path.join(splits_dir, SPLIT_FILE.format(split=split)) for split in SPLITS}
    for split, path in paths.items():
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"{path}: no such split file (the {split} split of MTG-Jamendo's "
                f"data/splits/split-0 is expected in {splits_dir})"
            )
    return paths


def check_splits(tsvs: dict) -> None:
    """Every split file parses and lists tracks (ValueError naming the file otherwise)."""
    from tfmood.data.metadata import read_split

    for path in tsvs.values():
        if not read_split(path):
            raise ValueError(f"{path}: empty split (a header and no tracks)")


def write_split_shards(
    config: ReproduceConfig, tsvs: dict, shard_root: str, splits: tuple = SPLITS
) -> dict:
    """Shards of the first `n_frames` frames of `splits`; returns split -> shard index."""
    from tfmood.data.shards import write_shards

    if not os.path.isdir(config.data):
        raise FileNotFoundError(f"{config.data}: no such data folder ({config.source} root)")
    indexes = {}
    for split in splits:
        out = os.path.join(shard_root, split)
        _log(f"checking and sharding the {split} split ({config.source}) -> {out}")
        indexes[split] = write_shards(
            tsvs[split], config.data, out, source=config.source, max_frames=config.n_frames,
            skip_bad=config.skip_bad,
        )
        if not indexes[split]["total"]:
            raise ValueError(f"{tsvs[split]}: no usable {config.source} file under {config.data}")
    return indexes


def preset_status(out_dir: str, preset: str) -> str:
    """Where a preset's training stands: finished, resumable after an epoch, or to train."""
    from tfmood.train.callbacks import backup_epoch

    run_dir = experiment.preset_out_dir(out_dir, preset)
    if os.path.exists(os.path.join(run_dir, "result.json")):
        return "finished"
    epoch = backup_epoch(os.path.join(run_dir, "backup"))
    return f"resumes after epoch {epoch}" if epoch else "to train"


def make_plan(config: ReproduceConfig, indexes: dict) -> Plan:
    """The plan of a run from the shard indexes of its splits."""
    tracks = {split: int(indexes[split]["total"]) for split in SPLITS}
    return Plan(
        tracks=tracks,
        left_out={split: len(indexes[split]["skipped"]) for split in SPLITS},
        batch_size=config.batch_size,
        steps_per_epoch=experiment.steps_per_epoch(
            tracks["train"], config.batch_size, config.strategy
        ),
        epochs=config.epochs,
        patience=config.patience,
        presets={preset: preset_status(config.out_dir, preset) for preset in config.presets},
    )


def train_settings(config: ReproduceConfig) -> TrainConfig:
    """The `TrainConfig` settings every preset trains with."""
    return TrainConfig(
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        epochs=config.epochs,
        patience=config.patience,
        n_frames=config.n_frames,
        width=config.width,
        dropout=config.dropout,
        seed=config.seed,
        strategy=config.strategy,
        precision=config.precision,
        tensorboard=config.tensorboard,
        cache_mb=config.cache_mb,
        # A live progress bar on a terminal; one line per epoch in a log file.
        verbose=1 if sys.stdout.isatty() else 2,
    )


def with_paper(row: dict, config: ReproduceConfig) -> dict:
    """A results row with the paper's numbers, the differences, and (for a preset) the GFLOPs
    and parameters of the model as trained (96 x n_frames, the run's width)."""
    from tfmood.models.complexity import preset_complexity

    row = dict(row)
    if "trained_params" in row:
        complexity = preset_complexity(row["model"], n_frames=config.n_frames, width=config.width)
        row["gflops"], row["params"] = round(complexity.gflops, 2), complexity.trainable_params
        del row["trained_params"]
    paper = PAPER_TABLE1.get(row["model"])
    row["paper_roc_auc"], row["paper_pr_auc"] = paper if paper else (None, None)
    row["roc_auc_difference"] = row["roc_auc"] - paper[0] if paper else None
    row["pr_auc_difference"] = row["pr_auc"] - paper[1] if paper else None
    return row


def results_table(rows: list[dict]) -> str:
    """Markdown table: Table 1's columns, the paper's numbers beside ours, and the differences."""
    header = ("No.", "Model", "GFLOPs", "#Parameters", "ROC-AUC", "paper ROC-AUC",
              "difference", "PR-AUC", "paper PR-AUC", "difference", "best epoch",
              "training time")
    number = experiment.number
    cells = [
        (str(index), row["model"], number(row.get("gflops"), ".2f"),
         number(row.get("params"), ","),
         f"{row['roc_auc']:.3f}", number(row["paper_roc_auc"], ".3f"),
         number(row["roc_auc_difference"], "+.3f"),
         f"{row['pr_auc']:.3f}", number(row["paper_pr_auc"], ".3f"),
         number(row["pr_auc_difference"], "+.3f"),
         number(row.get("best_epoch"), "d"), number(row.get("train_seconds"), ".0f", " s"))
        for index, row in enumerate(rows, start=1)
    ]
    return experiment.markdown_table(header, "llrrrrrrrrrr", cells)


def run_reproduce(config: ReproduceConfig) -> dict[str, dict]:
    """Check the data, state the plan, run (or resume) the experiment, write the table.

    Returns:
        The results rows by model name (presets, then the fusions whose members ran).

    Raises:
        FileNotFoundError: a missing split file or data folder.
        ValueError: an empty split, a split without usable files, or a bad data file.
    """
    from tfmood.train.config import config_values, save_config
    from tfmood.train.fit import is_chief

    started = time.perf_counter()
    tsvs = split_files(config.splits)
    check_splits(tsvs)
    if not is_chief(config.strategy):
        return _train_as_worker(config, tsvs)
    os.makedirs(config.out_dir, exist_ok=True)
    indexes = write_split_shards(config, tsvs, os.path.join(config.out_dir, "shards"))
    plan = make_plan(config, indexes)
    atomic.write_json(os.path.join(config.out_dir, "plan.json"), plan.as_dict())
    save_config(config, os.path.join(config.out_dir, "config.yaml"))  # reruns with --config
    for line in plan.lines():
        _log(line)
    data = experiment.SplitData(
        tsv=tsvs, root={split: os.path.join(config.out_dir, "shards", split) for split in SPLITS}
    )
    if config.strategy == "multiworker":
        train_in_processes(config, data)  # then the experiment finds every preset trained
    result = experiment.run_experiment(data, config.presets, train_settings(config),
                                       config.out_dir, log=_log)
    rows = [with_paper(row, config) for row in result.rows]
    table = results_table(rows)
    experiment.write_results(config.out_dir, table, config_values(config), rows)
    _log(f"done in {time.perf_counter() - started:.0f} s; everything is in {config.out_dir}")
    print(table, flush=True)  # last, so that it stays on the screen
    return {row["model"]: row for row in rows}


def train_in_processes(config: ReproduceConfig, data: experiment.SplitData) -> None:
    """Train every preset of a multi-worker run, each in its own `tfmood train` process.

    A MultiWorkerMirroredStrategy sets up its process's collectives at start-up: a second one in
    the same process, created while another worker has already begun the next training, drops
    that worker's first messages and the run aborts. Every worker starts the same processes in
    the same order; a preset already finished (its result.json in the shared output folder)
    returns at once on every worker.
    """
    from tfmood.train.config import save_config

    settings = train_settings(config)
    for number, preset in enumerate(config.presets, start=1):
        _log(f"[{number}/{len(config.presets)}] training {preset} (multi-worker, own process)")
        run = experiment.preset_train_config(settings, preset, data, config.out_dir)
        with tempfile.TemporaryDirectory(prefix="tfmood-reproduce-") as folder:
            path = os.path.join(folder, "train.yaml")
            save_config(run, path)
            command = [sys.executable, "-m", "tfmood", "train", "--config", path]
            status = subprocess.run(command, check=False).returncode
        if status:
            raise RuntimeError(f"training {preset} failed (exit status {status}; output above)")


def _train_as_worker(config: ReproduceConfig, tsvs: dict) -> dict:
    """A non-chief worker of a multi-worker run: its own shards (in a temporary folder, like
    its training files) and the trainings; the chief tests, fuses and writes the table."""
    shard_root = tempfile.mkdtemp(prefix="tfmood-worker-shards-")
    try:
        write_split_shards(config, tsvs, shard_root, splits=("train", "validation"))
        data = experiment.SplitData(
            tsv=tsvs, root={split: os.path.join(shard_root, split) for split in SPLITS}
        )
        train_in_processes(config, data)
    finally:
        shutil.rmtree(shard_root, ignore_errors=True)
    return {}
