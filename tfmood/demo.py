"""The main job: the paper's experiment, end to end, on the synthetic mood corpus.

Generate a corpus, turn it into log-mel TFRecord shards, train the six presets on the same data,
evaluate each on the test split, late-fuse as the paper does, print a table in the form of the
paper's Table 1, export the best model to TFLite, and write everything under one folder. Every
stage skips what a previous run already finished, so an interrupted demo resumes.

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
import json
import os
import sys
import time
from typing import Dict, List, Sequence, Tuple

import numpy as np

from tfmood import atomic

PRESET_ORDER = ("baseline", "sa3", "sa4", "sa5", "arelu", "sa3-arelu")
# The paper's late fusions (Table 1, rows 6 and 7).
FUSIONS = (("sa3", "arelu"), ("baseline", "sa3", "arelu"))
SPLITS = ("train", "validation", "test")


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
    presets: Sequence[str] = PRESET_ORDER
    n_frames: int = 320
    width: Tuple[float, ...] = (0.25, 0.25, 0.5, 1.0, 1.0)
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
    from tfmood.data import pipeline, synth

    corpus_dir = os.path.join(config.out_dir, "corpus")
    _log(f"synthetic corpus: {config.tracks} tracks x {config.seconds:g} s -> {corpus_dir}")
    info = synth.generate_corpus(corpus_dir, config.tracks, config.seconds, config.seed,
                                 workers=min(2, os.cpu_count() or 1))
    shard_dirs = {}
    for split in SPLITS:
        shard_dirs[split] = os.path.join(config.out_dir, "shards", split)
        _log(f"log-mel shards of the {split} split -> {shard_dirs[split]}")
        pipeline.write_shards(info.split_paths[split], info.audio_dir, shard_dirs[split],
                          source="audio")
    return info, shard_dirs


def train_preset(config: DemoConfig, preset: str, info, shard_dirs) -> dict:
    from tfmood.train.fit import TrainConfig, train

    run = TrainConfig(
        preset=preset,
        train_tsv=info.split_paths["train"],
        validation_tsv=info.split_paths["validation"],
        train_root=shard_dirs["train"],
        validation_root=shard_dirs["validation"],
        source="tfrecord",
        out_dir=os.path.join(config.out_dir, "models", preset),
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
    return train(run).as_dict()


def test_preset(config: DemoConfig, preset: str, model_path: str, info, shard_dirs) -> dict:
    from tfmood.inference import test_model

    out = os.path.join(config.out_dir, "test", preset)
    metrics_path = os.path.join(out, "metrics.json")
    if not os.path.exists(metrics_path):
        test_model(model_path, info.split_paths["test"], shard_dirs["test"], out,
                   source="tfrecord", n_frames=config.n_frames, batch_size=config.batch_size)
    with open(metrics_path) as handle:
        return json.load(handle)


def fuse(config: DemoConfig, members: Sequence[str]) -> dict:
    """Late fusion (mean of scores) of test predictions, evaluated on the same tags."""
    from tfmood import metrics

    test_dir = os.path.join(config.out_dir, "test")
    scores = [np.load(os.path.join(test_dir, p, "predictions.npy")) for p in members]
    groundtruth = np.load(os.path.join(test_dir, members[0], "groundtruth.npy"))
    columns = metrics.defined_columns(groundtruth)
    fused = metrics.fuse_scores(scores)
    out = os.path.join(config.out_dir, "fusion", "+".join(members))
    os.makedirs(out, exist_ok=True)
    metrics.save_matrix(os.path.join(out, "predictions.npy"), fused)
    from tfmood.data.tags import MOODTHEME_TAGS

    result = metrics.evaluate(groundtruth[:, columns], fused[:, columns],
                              tags=[MOODTHEME_TAGS[c] for c in columns])
    metrics.write_report(result, out)
    return result.summary


def paper_complexity(preset: str) -> dict:
    """GFLOPs and parameters of the paper's full-size model (96 x 1400, width 1)."""
    from tfmood.models.complexity import preset_complexity

    return preset_complexity(preset).as_dict()


def results_table(rows: List[dict]) -> str:
    """Markdown table in the form of the paper's Table 1."""
    lines = [
        "| No. | Model | GFLOPs (paper size) | #Parameters (paper size) | demo #parameters "
        "| ROC-AUC | PR-AUC | training time |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for number, row in enumerate(rows, start=1):
        gflops = f"{row['gflops']:.2f}" if row.get("gflops") is not None else ""
        params = f"{row['params']:,}" if row.get("params") is not None else ""
        demo_params = f"{row['demo_params']:,}" if row.get("demo_params") is not None else ""
        seconds = f"{row['train_seconds']:.0f} s" if row.get("train_seconds") is not None else ""
        lines.append(
            f"| {number} | {row['model']} | {gflops} | {params} | {demo_params} "
            f"| {row['roc_auc']:.3f} | {row['pr_auc']:.3f} | {seconds} |"
        )
    return "\n".join(lines)


def _model_params(path: str) -> int:
    from tfmood.models.vggish import load_model

    model = load_model(path)
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


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


def run_demo(config: DemoConfig) -> Dict[str, dict]:
    """Run (or resume) the whole demo; returns the results table rows by model name."""
    started = time.perf_counter()
    os.makedirs(config.out_dir, exist_ok=True)
    info, shard_dirs = make_corpus(config)
    rows, trained = [], {}
    for number, preset in enumerate(config.presets, start=1):
        _log(f"[{number}/{len(config.presets)}] training {preset}")
        trained[preset] = train_preset(config, preset, info, shard_dirs)
        summary = test_preset(config, preset, trained[preset]["best_model"], info, shard_dirs)
        complexity = paper_complexity(preset)
        rows.append({
            "model": preset,
            "gflops": complexity["gflops"],
            "params": complexity["trainable_params"],
            "demo_params": _model_params(trained[preset]["best_model"]),
            "roc_auc": summary["ROC-AUC-macro"],
            "pr_auc": summary["PR-AUC-macro"],
            "train_seconds": trained[preset]["train_seconds"],
            "best_epoch": trained[preset]["best_epoch"],
            "metrics": summary,
        })
        _log(f"{preset}: test ROC-AUC {summary['ROC-AUC-macro']:.3f}, "
             f"PR-AUC {summary['PR-AUC-macro']:.3f}")
    for members in FUSIONS:
        if all(m in trained for m in members):
            summary = fuse(config, members)
            rows.append({"model": "late fusion " + " + ".join(members),
                         "roc_auc": summary["ROC-AUC-macro"], "pr_auc": summary["PR-AUC-macro"],
                         "metrics": summary})
    table = results_table(rows)
    atomic.write_text(os.path.join(config.out_dir, "results.md"), table + "\n")
    atomic.write_json(os.path.join(config.out_dir, "results.json"),
               {"config": dataclasses.asdict(config), "rows": rows})
    # The model to deploy is chosen on validation data, as a user would: not on the test split.
    best = max(config.presets, key=lambda p: trained[p]["val_roc_auc"])
    if config.export:
        exports = export_best(config, best, trained[best]["best_model"], info)
        atomic.write_json(os.path.join(config.out_dir, "export", "report.json"), exports)
    _log(f"done in {time.perf_counter() - started:.0f} s; everything is in {config.out_dir}")
    print(table, flush=True)  # last, so that it stays on the screen
    return {row["model"]: row for row in rows}
