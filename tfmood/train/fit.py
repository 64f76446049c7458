"""Training one model: config, data, compile, fit with validation-based selection, resume.

`train(config)` is the one function behind `tfmood train`, `training/fit.py` and the demo.
Files written under `config.out_dir`:

    best.keras        best model by validation macro ROC-AUC (written atomically)
    history.csv       one row per epoch (loss, val_loss, val_roc_auc, val_pr_auc)
    curves.png        training curves
    config.yaml       the config that ran
    result.json       best epoch, its validation metrics, epochs run, training seconds
    backup/           BackupAndRestore state: re-running the same command resumes there
                      (removed once result.json is written)
    logs/             TensorBoard logs

With `strategy="multiworker"` every worker runs `train`; only the chief (TF_CONFIG task "chief",
or worker 0 when there is none) writes these files. The other workers write their copies to a
temporary directory that is removed at the end, and restore from the chief's backup, so
`out_dir` must be on a file system every worker sees (e.g. NFS) for a run to resume.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
from typing import Optional, Tuple

from tfmood.train.precision import PRECISIONS

LR_SCHEDULES = ("constant", "cosine")


class Width:
    """The type of `TrainConfig.width` for YAML and the command line (see models.parse_width)."""

    def __new__(cls, value):
        from tfmood.models.vggish import parse_width

        return parse_width(value)


@dataclasses.dataclass
class FitSettings:
    """What fitting any model needs: the data, the batch, Adam, epochs and early stopping.

    The fields shared by one training run (`TrainConfig`) and a search's trials
    (`tfmood.train.search.SearchConfig`); the defaults are the paper's settings.

    Args:
        train_tsv: split file of the training tracks (MTG-Jamendo format).
        validation_tsv: split file of the validation tracks.
        train_root: data of the training tracks: melspec root (npy), audio root, or shard dir.
        validation_root: the same for validation (default: train_root).
        source: "npy", "audio" or "tfrecord".
        skip_bad: leave out (and list) bad data files instead of failing.
        n_frames: frames per training example (the paper: the first 1400).
        batch_size: examples per step (the paper: 16).
        learning_rate: Adam learning rate (the paper: 1e-4).
        epochs: most epochs (the paper: 100).
        patience: epochs without validation ROC-AUC improvement before stopping (the paper: 35).
        steps_per_epoch: limit the steps of an epoch (None: the whole training split).
        dropout: dropout before the dense layer.
        seed: seed of weights, shuffling and augmentation.
        verbose: Keras progress bar mode (1: bar, 2: one line per epoch, 0: silent).
    """

    train_tsv: Optional[str] = None
    validation_tsv: Optional[str] = None
    train_root: Optional[str] = None
    validation_root: Optional[str] = None
    source: str = "npy"
    skip_bad: bool = False
    n_frames: int = 1400
    batch_size: int = 16
    learning_rate: float = 1e-4
    epochs: int = 100
    patience: int = 35
    steps_per_epoch: Optional[int] = None
    dropout: float = 0.5
    seed: int = 0
    verbose: int = 1

    def __post_init__(self):
        for name in ("batch_size", "epochs", "n_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")


@dataclasses.dataclass
class TrainConfig(FitSettings):
    """Everything one training run needs: `FitSettings` and these.

    Args:
        preset: model preset: a VGG-ish one (baseline, sa3, sa4, sa5, arelu, sa3-arelu) or
            "micro", the microcontroller model (tfmood.models.micro) on `n_frames`-frame windows
            (320: 96 x 320 inputs).
        out_dir: where the run's files go.
        lr_schedule: "constant" (the paper) or "cosine": decay per step from `learning_rate` to 0
            over `epochs`, which suits short schedules that stop at a fixed epoch.
        width: channel multiplier of the model: one number, or one per block
            ("0.25,0.25,0.5,1,1" on the command line, a list in YAML).
        heads: attention heads (None: one per channel).
        micro_filters: channels of the micro model's strided convolutions (None: its default,
            16, 32, 64, 128; "16,32" on the command line, a list in YAML).
        micro_head_filters: channels of its stride-1 convolutions after them (None: its
            default, 128; may be empty).
        teacher: a `.keras` model to distil from (None: no distillation): the targets are the
            labels mixed with its scores on the same inputs (tfmood.train.distill.Distiller);
            the model saved is the student alone.
        distill_weight: the teacher's share of the targets, in [0, 1] (0: the labels only).
        strategy: "none", "mirrored" (the local GPUs/devices) or "multiworker" (TF_CONFIG).
        jit_compile: XLA-compile the training step.
        precision: "float32", "mixed_bfloat16" (CPUs with AVX-512 BF16 or AMX) or
            "mixed_float16" (GPUs): float32 variables, bf16/f16 computation, float32 scores
            (see tfmood.train.precision); the saved model is float32.
        random_crop, time_masks, freq_masks, mixup_alpha, skip_silence: input augmentation
            (see tfmood.data.pipeline.DataConfig).
        prior_bias: start the output biases at the log-odds of each tag's training frequency, so
            the first epochs learn the audio instead of the tags' base rates.
        tensorboard: write TensorBoard logs.
        cache_mb: most megabytes of examples one split may cache in memory (None: no limit). A
            split whose examples would take more is read from its files every epoch instead, so
            the memory of a run stays bounded as the data set grows (see `cache_fits`).
    """

    preset: str = "baseline"
    out_dir: str = "runs/baseline"
    lr_schedule: str = "constant"
    width: Width = 1.0
    heads: Optional[int] = None
    micro_filters: Optional[Tuple[int, ...]] = None
    micro_head_filters: Optional[Tuple[int, ...]] = None
    teacher: Optional[str] = None
    distill_weight: float = 0.5
    strategy: str = "none"
    jit_compile: bool = False
    precision: str = "float32"
    random_crop: bool = False
    time_masks: int = 0
    freq_masks: int = 0
    mixup_alpha: float = 0.0
    skip_silence: bool = False
    prior_bias: bool = True
    tensorboard: bool = True
    cache_mb: Optional[int] = 1024

    def __post_init__(self):
        super().__post_init__()
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        self.width = Width(self.width)
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(
                f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}"
            )
        if not 0.0 <= self.distill_weight <= 1.0:
            raise ValueError(f"distill_weight must be in [0, 1], got {self.distill_weight}")
        self._check_model_fields()

    def _check_model_fields(self) -> None:
        """The width fields of the VGG-ish presets and the channel fields of the micro model
        apply to their own models only; the micro model reads fixed-length windows."""
        from tfmood.models.micro import MICRO_PRESET, WINDOW_FRAMES

        for name in ("micro_filters", "micro_head_filters"):
            channels = getattr(self, name)
            if channels is None:
                continue
            if self.preset != MICRO_PRESET:
                raise ValueError(f"{name} applies to the micro preset, not {self.preset!r}")
            setattr(self, name, tuple(int(count) for count in channels))
        if self.preset != MICRO_PRESET:
            return
        if self.width != 1.0 or self.heads is not None:
            raise ValueError("width and heads apply to the VGG-ish presets; the micro preset's "
                             "channels are micro_filters and micro_head_filters")
        if self.n_frames != WINDOW_FRAMES:
            raise ValueError(f"n_frames must be {WINDOW_FRAMES} for the micro preset (its "
                             f"96 x {WINDOW_FRAMES} windows), got {self.n_frames}")

    @classmethod
    def from_yaml(cls, path: str, **overrides) -> "TrainConfig":
        """`tfmood.train.config.load_config` of this class: a YAML config, `overrides` win."""
        from tfmood.train.config import load_config

        return load_config(cls, path, **overrides)

    def to_yaml(self, path: str) -> None:
        """`tfmood.train.config.save_config`: written atomically, read back equal."""
        from tfmood.train.config import save_config

        save_config(self, path)


STRATEGIES = ("none", "mirrored", "multiworker")


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
    """The tf.distribute strategy of a `TrainConfig.strategy` name.

    "mirrored" replicates over the local GPUs, or over the logical CPU devices when there is no
    GPU; "multiworker" reads the cluster from TF_CONFIG and must be created before any other
    TensorFlow work in the process.

    Args:
        name: "none", "mirrored" or "multiworker".
    """
    import tensorflow as tf

    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy: str) -> bool:
    """False only for a non-chief worker of a multi-worker run (from TF_CONFIG).

    Args:
        strategy: the `TrainConfig.strategy` name.
    """
    if strategy != "multiworker":
        return True
    import tensorflow as tf

    resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if resolver.task_type is None:
        return True
    if "chief" in resolver.cluster_spec().as_dict():
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def datasets(config: TrainConfig):
    """The training and validation pipelines of a run, and the validation labels in order.

    Returns:
        (train, validation, labels): batched tf.data datasets of (mel, labels) (the training one
        shuffled and augmented as configured), and the (tracks, tags) bool labels of the
        validation tracks in the validation dataset's order.
    """
    import numpy as np

    from tfmood.data import pipeline
    from tfmood.data.metadata import read_split

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
    distributed = config.strategy != "none"
    # Replicated steps never see a partial batch: the last one could leave a replica with no
    # example, and oneDNN's Conv2D (on by default on AVX-512 CPUs) returns an empty batch with
    # the input's channels, so that replica's collectives get other shapes than the others' and
    # the step aborts. Training drops the remainder; validation pads it (see pad_last_batch).
    train = pipeline.make_dataset(
        config.train_tsv, config.train_root, config.source, training=True,
        **{**options, "drop_remainder": distributed, "cache": cache_fits(config, config.train_tsv)},
    )  # fmt: skip
    validation_root = config.validation_root or config.train_root
    validation = pipeline.make_dataset(
        config.validation_tsv, validation_root, config.source, training=False,
        **{**options, "mixup_alpha": 0.0, "with_ids": False,
           "cache": cache_fits(config, config.validation_tsv)},
    )  # fmt: skip
    # The labels of the usable validation tracks, in the dataset's (deterministic) order.
    labels = np.concatenate([y for _, y in validation.as_numpy_iterator()]).astype(bool)
    if distributed:
        if len(read_split(config.train_tsv)) < config.batch_size:
            raise ValueError(
                f"{config.train_tsv}: fewer tracks than one batch of {config.batch_size}; a "
                "replicated run trains on whole batches only"
            )
        validation = pad_last_batch(validation, config.batch_size)
    if config.strategy == "multiworker":
        train, validation = _shard_by_data(train), _shard_by_data(validation)
    return train, validation, labels


# Whole tracks over the 1400 frames a model reads: an MTG-Jamendo melspec averages ~10,400
# frames (7.4x), rounded up. A random crop or the silence skip caches whole tracks.
WHOLE_TRACK_FACTOR = 8


def cache_bytes(config: TrainConfig, tsv: str, n_mels: int = 96) -> int:
    """The memory the cached examples of split `tsv` would take (float32 mels)."""
    from tfmood.data.metadata import read_split

    frames = config.n_frames
    if config.random_crop or config.skip_silence:
        frames *= WHOLE_TRACK_FACTOR
    return len(read_split(tsv)) * n_mels * frames * 4


def cache_fits(config: TrainConfig, tsv: str) -> bool:
    """Whether split `tsv` is cached in memory: its examples fit in `config.cache_mb`."""
    return config.cache_mb is None or cache_bytes(config, tsv) <= config.cache_mb * 2**20


def pad_last_batch(dataset, batch_size: int):
    """Every batch of (mel, labels) filled up to `batch_size` with zero examples at its end.

    Predictions of the padded rows come after every real one; callers keep the first rows
    (`ValidationAUC` keeps as many as it has labels).
    """
    import tensorflow as tf

    def pad(mel, labels):
        missing = batch_size - tf.shape(mel)[0]
        mel = tf.pad(mel, [[0, missing], [0, 0], [0, 0]])
        labels = tf.pad(labels, [[0, missing], [0, 0]])
        return tf.ensure_shape(mel, [batch_size, *mel.shape[1:]]), labels

    return dataset.map(pad)


def _shard_by_data(dataset):
    """Each worker takes its part of every batch: the pipeline reads no per-worker files, and
    the gathered validation predictions then come back in the dataset's order."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def tag_prior_bias(tsv: str, epsilon: float = 1e-3):
    """Log-odds of each tag's frequency in a split (clipped away from 0 and 1)."""
    import numpy as np

    from tfmood.data.metadata import label_matrix, read_split

    frequency = np.clip(label_matrix(read_split(tsv)).mean(axis=0), epsilon, 1 - epsilon)
    return np.log(frequency / (1 - frequency)).astype("float32")


def steps_per_epoch(config: TrainConfig) -> int:
    """Training steps of one epoch: `config.steps_per_epoch`, else batches of the train split."""
    import math

    from tfmood.data.metadata import read_split

    if config.steps_per_epoch:
        return config.steps_per_epoch
    tracks = len(read_split(config.train_tsv))
    if config.strategy != "none":  # whole batches only (see datasets)
        return max(1, tracks // config.batch_size)
    return max(1, math.ceil(tracks / config.batch_size))


def learning_rate(config: TrainConfig):
    """Adam's learning rate: a constant, or a per-step cosine decay over all epochs."""
    import keras

    if config.lr_schedule == "constant" or not config.train_tsv:
        return config.learning_rate
    total = config.epochs * steps_per_epoch(config)
    return keras.optimizers.schedules.CosineDecay(config.learning_rate, decay_steps=total)


def build_preset_model(config: TrainConfig):
    """The untrained model of `config.preset`: a VGG-ish preset for any input length, or the
    micro model on `config.n_frames`-frame windows."""
    from tfmood.models.micro import MICRO_PRESET
    from tfmood.models.vggish import build_model

    if config.preset == MICRO_PRESET:
        channels = {"filters": config.micro_filters, "head_filters": config.micro_head_filters}
        channels = {name: value for name, value in channels.items() if value is not None}
        return build_model(config.preset, n_frames=config.n_frames, dropout=config.dropout,
                           **channels)  # fmt: skip
    return build_model(config.preset, n_frames=None, width=config.width, heads=config.heads,
                       dropout=config.dropout)  # fmt: skip


def build_and_compile(config: TrainConfig):
    """The preset model, compiled with Adam and binary cross-entropy; with `config.teacher`, a
    `tfmood.train.distill.Distiller` of it (trained as the model, saved as the student)."""
    import keras

    from tfmood.train import precision

    precision.check_precision(config.precision)
    with precision.dtype_policy(config.precision):
        model = build_preset_model(config)
    output = model.layers[-1]  # the dense sigmoid
    if config.precision != "float32":
        precision.keep_output_float32(model, output.name)
    if config.prior_bias and config.train_tsv:
        output.bias.assign(tag_prior_bias(config.train_tsv))
    if config.teacher and config.distill_weight > 0:
        from tfmood.models.vggish import load_model
        from tfmood.train.distill import Distiller

        model = Distiller(model, load_model(config.teacher), config.distill_weight)
    adam = keras.optimizers.Adam(learning_rate(config))
    model.compile(
        optimizer=precision.loss_scaled(adam, config.precision),
        loss="binary_crossentropy",
        jit_compile=config.jit_compile,
    )
    return model


def train(config: TrainConfig) -> TrainResult:
    """Fit one model; re-running with the same out_dir resumes an interrupted run.

    A run that already finished (result.json present) is not trained again.

    Args:
        config: the run's settings.
    """
    result_path = os.path.join(config.out_dir, "result.json")
    if os.path.exists(result_path):
        with open(result_path) as handle:
            return TrainResult(**json.load(handle))
    # The strategy first: MultiWorkerMirroredStrategy must exist before any other TF work.
    strategy = make_strategy(config.strategy)
    chief = is_chief(config.strategy)
    # As in the TF multi-worker guide, other workers write to a temporary directory.
    write_dir = config.out_dir if chief else tempfile.mkdtemp(prefix="tfmood-worker-")
    try:
        result = _fit(config, strategy, write_dir)
    finally:
        if not chief:
            shutil.rmtree(write_dir, ignore_errors=True)
    if chief:
        from tfmood import atomic

        atomic.write_json(result_path, result.as_dict())
        shutil.rmtree(os.path.join(config.out_dir, "backup"), ignore_errors=True)
    return result


def _work_around_multiworker_keras(model, config: TrainConfig) -> None:
    """Two failures of Keras 3.15's `fit` under MultiWorkerMirroredStrategy, worked around
    (tfmood.compat: building from the input shapes, scalar logs reduced as vectors)."""
    import numpy as np

    from tfmood import compat
    from tfmood.data.tags import N_TAGS

    batch = (np.zeros((1, 96, config.n_frames), "float32"), np.zeros((1, N_TAGS), "float32"))
    compat.build_from_shapes(model, batch)
    compat.scalar_logs_as_vectors(model)


def _finished(rows: list, config: TrainConfig) -> bool:
    """Whether the epochs of `rows` already ended the run (all epochs, or early stopping)."""
    from tfmood.train.callbacks import best_row

    if len(rows) >= config.epochs:
        return True
    best = best_row(rows, "val_roc_auc")
    last = int(rows[-1]["epoch"]) if rows else -1
    return bool(best and config.patience and last - int(best["epoch"]) >= config.patience)


def _fit(config: TrainConfig, strategy, write_dir: str) -> TrainResult:
    """Build, fit (resuming from the backup of `config.out_dir`) and summarise one run."""
    import keras

    from tfmood.train.callbacks import (
        AtomicBackupAndRestore,
        BestCheckpointEarlyStopping,
        ValidationAUC,
        backup_epoch,
        best_row,
        keep_committed_history,
        plot_training_curves,
        read_history,
    )
    from tfmood.train.precision import save_float32

    out = config.out_dir
    chief = write_dir == out
    os.makedirs(write_dir, exist_ok=True)
    backup_dir = os.path.join(out, "backup")
    history_csv = os.path.join(out, "history.csv")
    committed = backup_epoch(backup_dir)
    if chief:
        config.to_yaml(os.path.join(out, "config.yaml"))
        keep_committed_history(history_csv, committed)
    keras.utils.set_random_seed(config.seed)
    if config.verbose and config.strategy != "none":
        print(f"{type(strategy).__name__}: {strategy.num_replicas_in_sync} replicas in sync")

    best_path = os.path.join(write_dir, "best.keras")
    selector = BestCheckpointEarlyStopping(
        best_path, history_csv, "val_roc_auc", config.patience, committed_epochs=committed
    )
    started = time.perf_counter()
    rows = [row for row in read_history(history_csv) if int(row["epoch"]) < committed]
    if not _finished(rows, config):
        train_data, validation_data, validation_labels = datasets(config)
        with strategy.scope():
            model = build_and_compile(config)
        if config.strategy == "multiworker":
            _work_around_multiworker_keras(model, config)
        # Order matters: the CSV row, then the backup (the epoch is then committed), then the
        # best model; a resumed run drops CSV rows of epochs the backup does not hold.
        callbacks = [
            ValidationAUC(validation_data, validation_labels),
            keras.callbacks.CSVLogger(os.path.join(write_dir, "history.csv"), append=True),
            AtomicBackupAndRestore(
                os.path.join(write_dir, "backup"), restore_dir=backup_dir, delete_checkpoint=False
            ),
            selector,
        ]
        if config.tensorboard:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(write_dir, "logs")))
        model.fit(
            train_data,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            callbacks=callbacks,
            verbose=config.verbose,
        )
        rows = selector.history
    elif chief and best_row(rows)["epoch"] == rows[-1]["epoch"]:
        # A kill between the last epoch's backup and the save of its (best) model would leave
        # an older best.keras; the backup holds that epoch's weights.
        _save_backup_as_best(config, os.path.join(backup_dir, "latest.weights.h5"), best_path)
    if chief and config.precision != "float32":
        # A mixed run's checkpoints carry its layers' bf16/f16 policies; the kept model is
        # float32, so loading and exporting it builds the float32 graph.
        save_float32(best_path)
    seconds = time.perf_counter() - started
    if chief:
        plot_training_curves(history_csv, os.path.join(out, "curves.png"), title=config.preset)
    return _result(rows, os.path.join(out, "best.keras"), seconds)


def _save_backup_as_best(config: TrainConfig, weights_path: str, best_path: str) -> None:
    """Save the model of a backup's weights (and optimizer state) as the best model."""
    from tfmood import atomic

    model = build_and_compile(dataclasses.replace(config, strategy="none", prior_bias=False))
    model.optimizer.build(model.trainable_variables)
    model.load_weights(weights_path)
    atomic.save_model(model, best_path)


def _result(rows: list, best_path: str, seconds: float) -> TrainResult:
    """The summary of a run from its epoch rows (`best_path`: the chief's best model)."""
    from tfmood.train.callbacks import best_row

    best = best_row(rows, "val_roc_auc")
    return TrainResult(
        best_model=best_path,
        best_epoch=int(best["epoch"]) + 1,
        epochs_run=len(rows),
        val_roc_auc=float(best["val_roc_auc"]),
        val_pr_auc=float(best["val_pr_auc"]),
        train_seconds=round(seconds, 1),
    )
