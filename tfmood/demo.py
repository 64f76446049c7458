"""The main job: the paper's experiment, end to end, on the synthetic mood corpus.

Generate a corpus, turn it into log-mel TFRecord shards, train the six presets on the same data,
evaluate each on the test split, late-fuse as the paper does, print a table in the form of the
paper's Table 1, export the best model to TFLite, and write everything under one folder. Every
stage skips what a previous run already finished, so an interrupted demo resumes. The
experiment itself (train, test, fuse) is `tfmood.experiment`, the runner `tfmood reproduce` uses on
MTG-Jamendo; the demo adds the corpus, its table and the export.

The demo is sized to run on a 2-core CPU within 15 minutes: shorter clips and narrower models than
the paper's (`DemoConfig`); the GFLOPs and parameters in the table are those of the paper's full
models at 96 x 1400, computed, and the ROC-AUC/PR-AUC are those of the demo's models. The demo
models keep the paper's channels in the late blocks and a quarter of them in the first two
(`width`): the first blocks run on the large maps and set the cost of a step, while the late
blocks hold the features the 56 tags are read from (with a quarter everywhere, the models learned
the corpus far more slowly per epoch).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time

from tfmood import experiment
from tfmood.experiment import PRESET_ORDER, SPLITS
from tfmood.train.fit import Width


@dataclasses.dataclass
class DemoConfig:
    """Size of the demo run.

    Args:
        out_dir: where everything goes.
        tracks: synthetic tracks (train/validation/test 70/15/15).
        seconds: length of every track.
        seed: seed of the corpus and of training.
        presets: the models to train.
        n_frames: frames per training example (the paper: 1400, about 30 s).
        width: channel multiplier of each block (the paper: 1.0 everywhere).
        epochs: most epochs per model.
        patience: early-stopping patience on validation ROC-AUC.
        batch_size: examples per step (the paper: 16).
        learning_rate: Adam learning rate (higher than the paper's 1e-4 for the short schedule).
        lr_schedule: "constant" or "cosine" (see TrainConfig).
        dropout: dropout before the dense layer (the narrow demo models keep more features).
        export: export the best model (chosen on validation) to TFLite.
    """

    out_dir: str = "demo_output"
    tracks: int = 1200
    seconds: float = 8.0
    seed: int = 0
    presets: tuple[str, ...] = PRESET_ORDER
    n_frames: int = 320
    width: Width = (0.25, 0.25, 0.5, 1.0, 1.0)
    epochs: int = 6
    patience: int = 6
    batch_size: int = 16
    learning_rate: float = 3e-3
    lr_schedule: str = "constant"
    dropout: float = 0.1
    export: bool = True


def _log(message: str) -> None:
    print(f"[tfmood demo] {message}", flush=True)


def make_corpus(config: DemoConfig):
    """The synthetic corpus and its log-mel shards, reused when already complete."""
    from tfmood.data import synth
    from tfmood.data.shards import write_shards

    corpus_dir = os.path.join(config.out_dir, "corpus")
    _log(f"synthetic corpus: {config.tracks} tracks x {config.seconds:g} s -> {corpus_dir}")
    info = synth.generate_corpus(corpus_dir, config.tracks, config.seconds, config.seed,
                                 workers=min(2, os.cpu_count() or 1))
    shard_dirs = {}
    for split in SPLITS:
        shard_dirs[split] = os.path.join(config.out_dir, "shards", split)
        _log(f"log-mel shards of the {split} split -> {shard_dirs[split]}")
        write_shards(info.split_paths[split], info.audio_dir, shard_dirs[split], source="audio")
    return info, shard_dirs


def train_settings(config: DemoConfig):
    """The `TrainConfig` settings every demo preset trains with."""
    from tfmood.train.fit import TrainConfig

    return TrainConfig(
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_schedule=config.lr_schedule,
        epochs=config.epochs,
        patience=config.patience,
        n_frames=config.n_frames,
        width=config.width,
        dropout=config.dropout,
        random_crop=True,
        seed=config.seed,
        tensorboard=False,
        # A live progress bar on a terminal; one line per epoch in a log file.
        verbose=1 if sys.stdout.isatty() else 2,
    )


def results_table(rows: list[dict]) -> str:
    """Markdown table in the form of the paper's Table 1."""
    header = ("No.", "Model", "GFLOPs (paper size)", "#Parameters (paper size)",
              "demo #parameters", "ROC-AUC", "PR-AUC", "training time")
    cells = [
        (str(index), row["model"], experiment.number(row.get("gflops"), ".2f"),
         experiment.number(row.get("params"), ","),
         experiment.number(row.get("demo_params"), ","),
         f"{row['roc_auc']:.3f}", f"{row['pr_auc']:.3f}",
         experiment.number(row.get("train_seconds"), ".0f", " s"))
        for index, row in enumerate(rows, start=1)
    ]
    return experiment.markdown_table(header, "llrrrrrr", cells)


def demo_row(row: dict) -> dict:
    """A results row of the experiment with its trained parameters named as the demo's."""
    return {("demo_params" if key == "trained_params" else key): value
            for key, value in row.items()}


def export_best(config: DemoConfig, best_preset: str, model_path: str, info) -> dict:
    """TFLite float32 and int8 exports of the best model."""
    from tfmood.deploy import export

    out = os.path.join(config.out_dir, "export")
    os.makedirs(out, exist_ok=True)
    reports = {}
    for target in ("float32", "int8"):
        path = os.path.join(out, f"{best_preset}-{target}.tflite")
        _log(f"exporting {best_preset} to TFLite {target} -> {path}")
        reports[target] = export.export_model(
            model_path, target, path, calibration=info.out_dir, n_frames=config.n_frames
        )
    return reports


def run_demo(config: DemoConfig) -> dict[str, dict]:
    """Run (or resume) the whole demo; returns the results table rows by model name."""
    from tfmood import atomic

    started = time.perf_counter()
    os.makedirs(config.out_dir, exist_ok=True)
    info, shard_dirs = make_corpus(config)
    data = experiment.SplitData(tsv=dict(info.split_paths), root=shard_dirs, source="tfrecord")
    result = experiment.run_experiment(data, config.presets, train_settings(config),
                                       config.out_dir, log=_log)
    rows = [demo_row(row) for row in result.rows]
    table = results_table(rows)
    experiment.write_results(config.out_dir, table, dataclasses.asdict(config), rows)
    # The model to deploy is chosen on validation data, as a user would: not on the test split.
    trained = result.trained
    best = max(config.presets, key=lambda p: trained[p]["val_roc_auc"])
    if config.export:
        exports = export_best(config, best, trained[best]["best_model"], info)
        atomic.write_json(os.path.join(config.out_dir, "export", "report.json"), exports)
    _log(f"done in {time.perf_counter() - started:.0f} s; everything is in {config.out_dir}")
    print(table, flush=True)  # last, so that it stays on the screen
    return {row["model"]: row for row in rows}
