"""Training one model: config, data, compile, fit with validation-based selection, resume.

`train(config)` is the one function behind `tfmood train`, `training/fit.py` and the demo.
Files written under `config.out_dir`:

    best.keras        best model by validation macro ROC-AUC (written atomically)
    history.csv       one row per epoch (loss, val_loss, val_roc_auc, val_pr_auc)
    curves.png        training curves
    config.yaml       the config that ran
    result.json       best epoch, its validation metrics, epochs run, training seconds
    backup/           BackupAndRestore state: re-running the same command resumes there
    logs/             TensorBoard logs
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import typing
from typing import Optional

import yaml


@dataclasses.dataclass
class TrainConfig:
    """Everything one training run needs; the defaults are the paper's settings.

    Args:
        preset: model preset (baseline, sa3, sa4, sa5, arelu, sa3-arelu).
        train_tsv: split file of the training tracks (MTG-Jamendo format).
        validation_tsv: split file of the validation tracks.
        train_root: data of the training tracks: melspec root (npy), audio root, or shard dir.
        validation_root: the same for validation (default: train_root).
        source: "npy", "audio" or "tfrecord".
        out_dir: where the run's files go.
        batch_size: examples per step (the paper: 16).
        learning_rate: Adam learning rate (the paper: 1e-4).
        epochs: most epochs (the paper: 100).
        patience: epochs without validation ROC-AUC improvement before stopping (the paper: 35).
        n_frames: frames per training example (the paper: the first 1400).
        width: channel multiplier of the model.
        heads: attention heads (None: one per channel).
        dropout: dropout before the dense layer.
        seed: seed of weights, shuffling and augmentation.
        strategy: "none", "mirrored" (the local GPUs/devices) or "multiworker" (TF_CONFIG).
        jit_compile: XLA-compile the training step.
        steps_per_epoch: limit the steps of an epoch (None: the whole training split).
        random_crop, time_masks, freq_masks, mixup_alpha, skip_silence: input augmentation
            (see tfmood.data.DataConfig).
        skip_bad: leave out (and list) bad data files instead of failing.
        tensorboard: write TensorBoard logs.
        verbose: Keras progress bar mode (1: bar, 2: one line per epoch, 0: silent).
    """

    preset: str = "baseline"
    train_tsv: Optional[str] = None
    validation_tsv: Optional[str] = None
    train_root: Optional[str] = None
    validation_root: Optional[str] = None
    source: str = "npy"
    out_dir: str = "runs/baseline"
    batch_size: int = 16
    learning_rate: float = 1e-4
    epochs: int = 100
    patience: int = 35
    n_frames: int = 1400
    width: float = 1.0
    heads: Optional[int] = None
    dropout: float = 0.5
    seed: int = 0
    strategy: str = "none"
    jit_compile: bool = False
    steps_per_epoch: Optional[int] = None
    random_crop: bool = False
    time_masks: int = 0
    freq_masks: int = 0
    mixup_alpha: float = 0.0
    skip_silence: bool = False
    skip_bad: bool = False
    tensorboard: bool = True
    verbose: int = 1

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        for name in ("batch_size", "epochs", "n_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")

    @classmethod
    def from_yaml(cls, path: str, **overrides) -> "TrainConfig":
        """Read a YAML config; `overrides` (e.g. from the command line) win. Unknown keys fail."""
        with open(path) as handle:
            values = yaml.safe_load(handle) or {}
        if not isinstance(values, dict):
            raise ValueError(f"{path}: a config must be a mapping of field: value")
        unknown = sorted(set(values) - set(field_types()))
        if unknown:
            raise ValueError(f"{path}: unknown config fields {unknown}")
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def to_yaml(self, path: str) -> None:
        tmp = path + ".tmp"
        with open(tmp, "w") as handle:
            yaml.safe_dump(dataclasses.asdict(self), handle, sort_keys=False)
        os.replace(tmp, path)


STRATEGIES = ("none", "mirrored", "multiworker")


def field_types() -> dict:
    """TrainConfig field name -> its plain type (int, float, str, bool), Optional unwrapped."""
    hints = typing.get_type_hints(TrainConfig)
    types = {}
    for field in dataclasses.fields(TrainConfig):
        hint = hints[field.name]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types[field.name] = args[0] if args else hint
    return types


@dataclasses.dataclass
class TrainResult:
    best_model: str
    best_epoch: int
    epochs_run: int
    val_roc_auc: float
    val_pr_auc: float
    train_seconds: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def make_strategy(name: str):
    import tensorflow as tf

    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _datasets(config: TrainConfig):
    import numpy as np

    from tfmood import data

    if not config.train_tsv or not config.validation_tsv or not config.train_root:
        raise ValueError("train_tsv, validation_tsv and train_root are required")
    options = dict(
        n_frames=config.n_frames,
        batch_size=config.batch_size,
        seed=config.seed,
        random_crop=config.random_crop,
        time_masks=config.time_masks,
        freq_masks=config.freq_masks,
        mixup_alpha=config.mixup_alpha,
        skip_silence=config.skip_silence,
        skip_bad=config.skip_bad,
        progress=config.verbose > 0,
    )
    train = data.make_dataset(
        config.train_tsv, config.train_root, config.source, training=True, **options
    )
    validation_root = config.validation_root or config.train_root
    validation = data.make_dataset(
        config.validation_tsv, validation_root, config.source, training=False,
        **{**options, "mixup_alpha": 0.0, "with_ids": False},
    )
    # The labels of the usable validation tracks, in the dataset's (deterministic) order.
    labels = np.concatenate([y for _, y in validation.as_numpy_iterator()]).astype(bool)
    return train, validation, labels


def build_and_compile(config: TrainConfig):
    """The preset model, compiled with Adam and binary cross-entropy."""
    import keras

    from tfmood.models import build_model

    model = build_model(config.preset, n_frames=None, width=config.width, heads=config.heads,
                        dropout=config.dropout)
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="binary_crossentropy",
        jit_compile=config.jit_compile,
    )
    return model


def train(config: TrainConfig) -> TrainResult:
    """Fit one model; re-running with the same out_dir resumes an interrupted run.

    A run that already finished (result.json present) is not trained again.
    """
    import keras

    from tfmood.callbacks import (
        AtomicBackupAndRestore,
        BestCheckpointEarlyStopping,
        ValidationAUC,
        plot_training_curves,
    )

    out = config.out_dir
    result_path = os.path.join(out, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as handle:
            return TrainResult(**json.load(handle))
    os.makedirs(out, exist_ok=True)
    config.to_yaml(os.path.join(out, "config.yaml"))
    keras.utils.set_random_seed(config.seed)

    strategy = make_strategy(config.strategy)
    train_data, validation_data, validation_labels = _datasets(config)
    with strategy.scope():
        model = build_and_compile(config)
    history_csv = os.path.join(out, "history.csv")
    best_path = os.path.join(out, "best.keras")
    selector = BestCheckpointEarlyStopping(best_path, history_csv, "val_roc_auc", config.patience)
    callbacks = [
        ValidationAUC(validation_data, validation_labels),
        selector,
        keras.callbacks.CSVLogger(history_csv, append=True),
        AtomicBackupAndRestore(os.path.join(out, "backup")),
    ]
    if config.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "logs")))

    started = time.perf_counter()
    model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        callbacks=callbacks,
        verbose=config.verbose,
    )
    seconds = time.perf_counter() - started
    plot_training_curves(history_csv, os.path.join(out, "curves.png"), title=config.preset)
    result = _result(history_csv, best_path, selector.best_epoch, seconds)
    tmp = result_path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump(result.as_dict(), handle, indent=2)
    os.replace(tmp, result_path)
    return result


def _result(history_csv: str, best_path: str, best_epoch: int, seconds: float) -> TrainResult:
    from tfmood.callbacks import read_history

    rows = read_history(history_csv)
    best = next(r for r in rows if int(r["epoch"]) == best_epoch)
    return TrainResult(
        best_model=best_path,
        best_epoch=best_epoch + 1,
        epochs_run=len(rows),
        val_roc_auc=best["val_roc_auc"],
        val_pr_auc=best["val_pr_auc"],
        train_seconds=round(seconds, 1),
    )
