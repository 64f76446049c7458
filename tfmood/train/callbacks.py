"""Keras callbacks of the training loop: validation AUCs, atomic best checkpoint, resumable runs."""

from __future__ import annotations

import csv
import json
import os
from typing import Optional

import keras
import numpy as np

from tfmood import atomic, metrics, plotting


def read_history(csv_path: str) -> list:
    """The rows of a CSVLogger file as dicts of floats (empty when there is none yet)."""
    if not os.path.exists(csv_path):
        return []
    with open(csv_path, newline="") as handle:
        return [
            {k: float(v) for k, v in row.items() if v not in ("", None)}
            for row in csv.DictReader(handle)
        ]


def best_row(rows: list, monitor: str = "val_roc_auc") -> Optional[dict]:
    """The first row with the highest `monitor` (None when no row has it).

    Args:
        rows: epoch rows as `read_history` returns them.
        monitor: the metric to maximise.
    """
    best = None
    for row in rows:
        if monitor in row and (best is None or row[monitor] > best[monitor]):
            best = row
    return best


def backup_epoch(backup_dir: str) -> int:
    """Epochs completed according to a `BackupAndRestore` directory (0 when it has none).

    Args:
        backup_dir: the backup directory of a run.
    """
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as handle:
        return int(json.load(handle)["epoch"])


def keep_committed_history(csv_path: str, epochs: int) -> None:
    """Drop the rows of epochs >= `epochs` from a CSVLogger file, atomically.

    A kill between the CSV row of an epoch and its backup leaves a row for an epoch that the
    resumed run trains again; removing it keeps one row per epoch. With `epochs` 0 the file goes.

    Args:
        csv_path: the CSVLogger file.
        epochs: the epochs the backup holds.
    """
    if not os.path.exists(csv_path):
        return
    if epochs == 0:
        os.remove(csv_path)
        return
    with open(csv_path, newline="") as handle:
        lines = handle.readlines()
    kept = lines[:1] + [line for line in lines[1:] if int(float(line.split(",")[0])) < epochs]
    if len(kept) == len(lines):
        return
    atomic.write_text(csv_path, "".join(kept))


def binary_crossentropy(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean binary cross-entropy, as Keras computes it (scores clipped to [eps, 1 - eps])."""
    eps = keras.config.epsilon()
    p = np.clip(np.asarray(scores, dtype=np.float64), eps, 1.0 - eps)
    y = np.asarray(labels, dtype=np.float64)
    return float(np.mean(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))))


class ValidationAUC(keras.callbacks.Callback):
    """Macro ROC-AUC and PR-AUC over the whole validation set, every epoch.

    Predicts the validation dataset (deterministic order) once and adds `val_loss`,
    `val_roc_auc` and `val_pr_auc` to the epoch logs, so callbacks after it (checkpoint, early
    stopping, CSV log) see them; `fit` then needs no `validation_data` (a second pass over the
    validation set). The AUCs are those of `tfmood evaluate` on the same predictions, over the
    tags that have both positive and negative validation tracks (the others are undefined);
    `val_loss` is Keras' binary cross-entropy over every tag.

    Args:
        dataset: validation dataset of (mel, labels) batches, not shuffled (rows past the
            labels' count, padding, are ignored).
        labels: (tracks, tags) ground truth in the dataset's order.
    """

    def __init__(self, dataset, labels: np.ndarray):
        super().__init__()
        self.dataset = dataset
        self.columns = metrics.defined_columns(labels)
        self.all_labels = np.asarray(labels, dtype=bool)
        self.labels = self.all_labels[:, self.columns]
        if self.columns.size == 0:
            raise ValueError(
                "the validation split has no tag with both positive and negative tracks"
            )

    def on_epoch_end(self, epoch, logs=None):
        # A replicated run pads the last batch (training.pad_last_batch): its rows come last.
        predictions = self.model.predict(self.dataset, verbose=0)[: len(self.all_labels)]
        scores = np.clip(predictions[:, self.columns], 0.0, 1.0)
        logs = logs if logs is not None else {}
        logs["val_loss"] = binary_crossentropy(self.all_labels, predictions)
        logs["val_roc_auc"] = metrics.macro_roc_auc(self.labels, scores)
        logs["val_pr_auc"] = metrics.macro_pr_auc(self.labels, scores)
        print(f" - val_roc_auc: {logs['val_roc_auc']:.4f} - val_pr_auc: {logs['val_pr_auc']:.4f}")


class BestCheckpointEarlyStopping(keras.callbacks.Callback):
    """Keep the best model by a validation metric (atomically) and stop after `patience` epochs.

    Its state (best value, best epoch) is recovered from the run's CSV log, so a resumed run
    keeps counting patience from where the interrupted one stopped. Place it after the
    `BackupAndRestore` callback: it then saves an epoch's model only once the epoch is backed
    up, and when the last backed-up epoch is the best one, it saves the restored model again at
    the start (a kill between the backup and the save would otherwise lose that model).

    Args:
        path: where the best `.keras` model is written.
        history_csv: the CSVLogger file of the run.
        monitor: the metric to maximise.
        patience: epochs without improvement before training stops (0: never stop early).
        committed_epochs: only the first `committed_epochs` epochs of the log count (the ones
            the backup holds); None: every row.

    Attributes:
        history: the epoch rows so far (the log's, then this run's epoch logs).
        best, best_epoch: the best value and its 0-based epoch (-inf, -1 before any).
    """

    def __init__(
        self,
        path: str,
        history_csv: str,
        monitor: str = "val_roc_auc",
        patience: int = 35,
        committed_epochs: Optional[int] = None,
    ):
        super().__init__()
        self.path = path
        self.history_csv = history_csv
        self.monitor = monitor
        self.patience = patience
        self.committed_epochs = committed_epochs
        self.history = []
        self.best = -np.inf
        self.best_epoch = -1
        self.stopped_epoch = None

    def on_train_begin(self, logs=None):
        atomic.remove_stale_temporaries(self.path)  # left by a process killed while saving
        self.history = [
            row
            for row in read_history(self.history_csv)
            if self.committed_epochs is None or int(row["epoch"]) < self.committed_epochs
        ]
        best = best_row(self.history, self.monitor)
        if best is not None:
            self.best, self.best_epoch = best[self.monitor], int(best["epoch"])
        if self.history and self.best_epoch == int(self.history[-1]["epoch"]):
            atomic.save_model(self.model, self.path)  # the restored weights are the best epoch's

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise ValueError(f"metric {self.monitor!r} is not in the epoch logs: {sorted(logs)}")
        self.history.append({"epoch": float(epoch), **logs})
        if value > self.best or not os.path.exists(self.path):
            self.best, self.best_epoch = value, epoch
            atomic.save_model(self.model, self.path)
        elif self.patience and epoch - self.best_epoch >= self.patience:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            print(
                f"\nEarly stopping: {self.monitor} has not improved for {self.patience} epochs "
                f"(best {self.best:.4f} at epoch {self.best_epoch + 1})"
            )


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose backup files are replaced atomically, so a kill mid-write
    leaves the previous backup usable.

    Args:
        backup_dir: where the backup is written.
        restore_dir: where it is restored from (default: `backup_dir`). A non-chief worker of a
            multi-worker run restores the chief's backup and writes its own to a temporary dir.
        **kwargs: passed to `keras.callbacks.BackupAndRestore`.
    """

    def __init__(self, backup_dir: str, restore_dir: Optional[str] = None, **kwargs):
        super().__init__(backup_dir, **kwargs)
        self.restore_dir = restore_dir or backup_dir

    def on_train_begin(self, logs=None):
        written = self._weights_path, self._training_metadata_path
        self._weights_path = os.path.join(self.restore_dir, os.path.basename(written[0]))
        self._training_metadata_path = os.path.join(
            self.restore_dir, os.path.basename(written[1])
        )
        try:
            super().on_train_begin(logs)
        finally:
            self._weights_path, self._training_metadata_path = written

    def _save_model(self):
        atomic.save_model(self.model, self._weights_path)
        atomic.write_json(
            self._training_metadata_path,
            {"epoch": self._current_epoch, "batch": self._last_batch_seen},
        )


def plot_training_curves(history_csv: str, path: str, title: Optional[str] = None) -> str:
    """PNG of loss and validation AUCs per epoch from a CSVLogger file."""
    rows = read_history(history_csv)
    if not rows:
        raise ValueError(f"{history_csv}: no epochs logged yet")
    epochs = [int(r["epoch"]) + 1 for r in rows]
    figure = plotting.new_figure((10, 4))
    loss_axes, auc_axes = figure.subplots(1, 2)
    for key in ("loss", "val_loss"):
        if key in rows[0]:
            loss_axes.plot(epochs, [r.get(key, np.nan) for r in rows], label=key)
    loss_axes.set_xlabel("epoch")
    loss_axes.set_ylabel("binary cross-entropy")
    loss_axes.legend()
    for key in ("val_roc_auc", "val_pr_auc"):
        if key in rows[0]:
            auc_axes.plot(epochs, [r.get(key, np.nan) for r in rows], marker="o", label=key)
    auc_axes.set_xlabel("epoch")
    auc_axes.set_ylabel("macro AUC")
    auc_axes.set_ylim(0, 1)
    auc_axes.legend()
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    plotting.save_png(figure, path)
    return path
