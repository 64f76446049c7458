"""The paper's experiment on any three splits: train presets, test each, late-fuse, tabulate.

The one runner behind `tfmood demo` (the synthetic corpus) and `tfmood reproduce` (MTG-Jamendo).
Given the split files, where their log-mel data lies and the training settings, it trains each
preset with `tfmood.train.fit.train` (which does not retrain a finished run and resumes an
interrupted one from its backup), tests it on the test split (unless its metrics are already
written) and evaluates the paper's two late fusions of the test scores. The callers add what
surrounds the experiment: the demo its corpus and TFLite export, reproduce its data check and the
paper's published numbers. Files under `out_dir`:

    models/PRESET/     the training run (best.keras, history.csv, curves.png, result.json)
    test/PRESET/       test predictions, ground truth, track ids, metrics, per-tag report
    fusion/A+B/        fused test predictions and their report
    results.md/.json   the table and its rows (`write_results`)
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence

import numpy as np

from tfmood import atomic

PRESET_ORDER = ("baseline", "sa3", "sa4", "sa5", "arelu", "sa3-arelu")
# The paper's late fusions (Table 1, rows 6 and 7).
FUSIONS = (("sa3", "arelu"), ("baseline", "sa3", "arelu"))
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class SplitData:
    """Where the three splits of an experiment lie.

    Args:
        tsv: split name (train, validation, test) -> its split file.
        root: split name -> its data: melspec root, audio root or shard directory.
        source: "npy", "audio" or "tfrecord" (see `tfmood.data.pipeline.make_dataset`).
    """

    tsv: dict[str, str]
    root: dict[str, str]
    source: str = "tfrecord"


@dataclasses.dataclass
class ExperimentResult:
    """What `run_experiment` returns.

    Args:
        rows: one dict per preset (in order), then one per fusion whose members all ran: model,
            roc_auc, pr_auc, metrics (the test summary); presets also gflops and params (the
            paper-size model, 96 x 1400, width 1), trained_params, train_seconds, best_epoch.
        trained: preset -> its `TrainResult.as_dict()`.
    """

    rows: list[dict]
    trained: dict[str, dict]


def fusion_name(members: Sequence[str]) -> str:
    """The table's name of a late fusion, e.g. "late fusion sa3 + arelu"."""
    return "late fusion " + " + ".join(members)


def steps_per_epoch(tracks: int, batch_size: int, strategy: str = "none") -> int:
    """Training steps of one epoch over `tracks` usable tracks.

    A replicated run (`strategy` other than "none") trains on whole batches only, as
    `tfmood.train.fit.datasets` builds it; otherwise the last batch may be partial.
    """
    if strategy != "none":
        return max(1, tracks // batch_size)
    return max(1, math.ceil(tracks / batch_size))


def preset_out_dir(out_dir: str, preset: str) -> str:
    """The training run folder of `preset`."""
    return os.path.join(out_dir, "models", preset)


def preset_train_config(settings, preset: str, data: SplitData, out_dir: str):
    """The `TrainConfig` of one preset of the experiment.

    Args:
        settings: a `tfmood.train.fit.TrainConfig` with the run's settings; its preset, split,
            data and output fields are replaced.
        preset: the model preset.
        data: the splits.
        out_dir: the experiment folder.
    """
    return dataclasses.replace(
        settings,
        preset=preset,
        train_tsv=data.tsv["train"],
        validation_tsv=data.tsv["validation"],
        train_root=data.root["train"],
        validation_root=data.root["validation"],
        source=data.source,
        out_dir=preset_out_dir(out_dir, preset),
    )


def train_preset(settings, preset: str, data: SplitData, out_dir: str) -> dict:
    """Train (or resume, or reuse) one preset; returns its `TrainResult.as_dict()`.

    Args: as `preset_train_config`.
    """
    from tfmood.train.fit import train

    return train(preset_train_config(settings, preset, data, out_dir)).as_dict()


def test_preset(settings, preset: str, model_path: str, data: SplitData, out_dir: str) -> dict:
    """Test a trained model on the test split (once); returns its metrics summary."""
    from tfmood.inference import test_model

    out = os.path.join(out_dir, "test", preset)
    metrics_path = os.path.join(out, "metrics.json")
    if not os.path.exists(metrics_path):
        test_model(model_path, data.tsv["test"], data.root["test"], out, source=data.source,
                   n_frames=settings.n_frames, batch_size=settings.batch_size,
                   skip_bad=settings.skip_bad)
    with open(metrics_path) as handle:
        return json.load(handle)


def fuse(out_dir: str, members: Sequence[str]) -> dict:
    """Late fusion (mean of scores) of test predictions, evaluated on the same tags."""
    from tfmood import metrics
    from tfmood.data.tags import MOODTHEME_TAGS

    test_dir = os.path.join(out_dir, "test")
    scores = [np.load(os.path.join(test_dir, p, "predictions.npy")) for p in members]
    groundtruth = np.load(os.path.join(test_dir, members[0], "groundtruth.npy"))
    columns = metrics.defined_columns(groundtruth)
    fused = metrics.fuse_scores(scores)
    out = os.path.join(out_dir, "fusion", "+".join(members))
    os.makedirs(out, exist_ok=True)
    metrics.save_matrix(os.path.join(out, "predictions.npy"), fused)
    result = metrics.evaluate(groundtruth[:, columns], fused[:, columns],
                              tags=[MOODTHEME_TAGS[c] for c in columns])
    metrics.write_report(result, out)
    return result.summary


def paper_complexity(preset: str) -> dict:
    """GFLOPs and parameters of the paper's full-size model (96 x 1400, width 1)."""
    from tfmood.models.complexity import preset_complexity

    return preset_complexity(preset).as_dict()


def trained_params(path: str) -> int:
    """Trainable parameters of a saved model."""
    from tfmood.models.vggish import load_model

    model = load_model(path)
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def preset_row(preset: str, trained: dict, summary: dict) -> dict:
    """The results row of a trained and tested preset."""
    complexity = paper_complexity(preset)
    return {
        "model": preset,
        "gflops": complexity["gflops"],
        "params": complexity["trainable_params"],
        "trained_params": trained_params(trained["best_model"]),
        "roc_auc": summary["ROC-AUC-macro"],
        "pr_auc": summary["PR-AUC-macro"],
        "train_seconds": trained["train_seconds"],
        "best_epoch": trained["best_epoch"],
        "metrics": summary,
    }


def run_experiment(
    data: SplitData,
    presets: Sequence[str],
    settings,
    out_dir: str,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Train and test every preset, then evaluate the paper's fusions of those that ran.

    Args:
        data: the splits.
        presets: the presets to train, in table order.
        settings: a `tfmood.train.fit.TrainConfig` with the training settings (batch size,
            schedule, input length, width, strategy, ...) shared by every preset.
        out_dir: the experiment folder; a rerun reuses everything finished there.
        log: where progress lines go.
    """
    rows, trained = [], {}
    for number, preset in enumerate(presets, start=1):
        log(f"[{number}/{len(presets)}] training {preset}")
        trained[preset] = train_preset(settings, preset, data, out_dir)
        summary = test_preset(settings, preset, trained[preset]["best_model"], data, out_dir)
        rows.append(preset_row(preset, trained[preset], summary))
        log(f"{preset}: test ROC-AUC {summary['ROC-AUC-macro']:.3f}, "
            f"PR-AUC {summary['PR-AUC-macro']:.3f}")
    for members in FUSIONS:
        if all(m in trained for m in members):
            summary = fuse(out_dir, members)
            rows.append({"model": fusion_name(members), "roc_auc": summary["ROC-AUC-macro"],
                         "pr_auc": summary["PR-AUC-macro"], "metrics": summary})
    return ExperimentResult(rows, trained)


def write_results(out_dir: str, table: str, config: dict, rows: list[dict]) -> None:
    """`results.md` (the table) and `results.json` (the config that ran and every row)."""
    atomic.write_text(os.path.join(out_dir, "results.md"), table + "\n")
    atomic.write_json(os.path.join(out_dir, "results.json"), {"config": config, "rows": rows})


def markdown_table(header: Sequence[str], align: str, cells: Sequence[Sequence[str]]) -> str:
    """A Markdown table; `align` has one letter per column: "l" left, "r" right."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(rule) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def number(value: float | None, spec: str, suffix: str = "") -> str:
    """`value` formatted with `spec` (and `suffix`), or an empty cell when it is None."""
    return "" if value is None else f"{value:{spec}}{suffix}"
