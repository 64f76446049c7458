"""Architecture search over the VGG-ish family with keras-tuner: where attention and AReLU go.

Per block the search picks the spatial layer (Conv2D "conv", LocalSelfAttention "attention",
AttentionAugmentedConv2D "augmented") and the activation (ELU "elu" or AReLU "arelu"); for the
whole model a channel-width multiplier and the attention heads. `VGGishHyperModel.build(hp)` only
maps the hyperparameters (`block_1_layer` .. `block_5_layer`, `block_1_activation` ..,
`width`, `heads`) to an ordinary `VGGishConfig`; the model code knows nothing of keras-tuner.

Budgets. Every candidate's trainable parameters, GFLOPs and peak activation memory are computed
at the full 96 x 1400 input (tfmood.models.complexity; the peak also counts the working set inside the
attention layers: the logits and softmax of full attention grow with (H * W) ** 2, so an
attention-augmented block 2 needs about 4.5 GB per example). A candidate over budget is rejected
before any training, inside the oracle, and logged (printed, kept in the oracle state and listed
in the report). Why not `keras_tuner.errors.FailedTrialError` from `build` / `run_trial`: in
keras-tuner 1.4.8 a failed trial is still a trial, so it counts toward `max_trials`, and three
consecutive failures (`max_consecutive_failed_trials`) raise RuntimeError and end the search; a
Hyperband bracket also loses the slot. Here the oracles draw again instead (the rejected values
are remembered as "tried", so they are never proposed twice), so `max_trials` counts trained
candidates only and rejections never stop the search. The filter sits in the oracle's random
sampler (used by random search, by Bayesian optimisation for its initial points and by
Hyperband for new brackets); a Bayesian proposal over budget is replaced by a random one within
it. If no candidate within budget turns up in `max_draws` draws, the search ends. (The filter
overrides the oracles' `_random_values` and `_duplicate`, internals of keras-tuner 1.4.8, the
version setup.cfg pins; tfmood.compat checks they exist.)

Resume. Trials live under `directory/project_name` (keras-tuner's files) and the tuner is made
with `overwrite=False`: running the same search again reloads the oracle, skips finished trials
and re-runs a trial that was interrupted. Measured latencies and the retrained best model are
kept beside them (`report/`), so a rerun of a finished search only rewrites the report.

Distributed mode (keras-tuner's chief/worker): start one chief and any number of workers with
the same config, the same `directory` (a shared file system) and these environment variables:

    KERASTUNER_TUNER_ID      "chief" for the chief, a unique name ("tuner0", "tuner1") per worker
    KERASTUNER_ORACLE_IP     the chief's address (the chief listens on it; 127.0.0.1 locally)
    KERASTUNER_ORACLE_PORT   the port, e.g. 8000

The chief runs only the oracle (a gRPC server: trial proposals, budget checks, results) and
loads no data; each worker asks it for a trial, trains it and reports back. When the oracle has
no trial left the workers stop, and the chief, once every worker has finished, writes the report
and retrains the best model. See training/SEARCH.md.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Callable, List, Optional, Sequence, Tuple

import keras
import keras_tuner
import numpy as np

from tfmood import atomic, plotting
from tfmood.train.config import load_config, save_config
from tfmood.train.fit import FitSettings, TrainConfig

TUNERS = ("random", "bayesian", "hyperband")
OBJECTIVES = ("val_roc_auc", "val_pr_auc")
LAYER_CHOICES = ("conv", "attention", "augmented")
ACTIVATION_CHOICES = ("elu", "arelu")
N_BLOCKS = 5
# Budgets are checked at the paper's full input size.
FULL_MELS, FULL_FRAMES = 96, 1400
LAYER_CODES = {"conv": "C", "attention": "SA", "augmented": "AA"}
ACTIVATION_CODES = {"elu": "E", "arelu": "A"}


# --------------------------------------------------------------------------------------------
# Configuration


@dataclasses.dataclass
class SearchConfig(FitSettings):
    """Everything one search needs (training/configs/search.yaml documents every field).

    The data and training fields are `tfmood.train.fit.FitSettings`'s, as in a training config
    (train_tsv, validation_tsv, train_root, validation_root, source, skip_bad, n_frames,
    batch_size, learning_rate, steps_per_epoch, dropout, seed, verbose); budgets are always
    computed at 96 x 1400 whatever `n_frames`. `epochs` is the epochs of one trial (hyperband:
    the most epochs of one model) and `patience` the early-stopping patience of the best
    candidate's retraining. The search's own fields:

    Args:
        layers: per block, the spatial layers to try ("conv", "attention", "augmented"); one
            list for every block, or five lists.
        activations: per block, the activations to try ("elu", "arelu"); one list or five.
        widths: channel-width multipliers to try.
        heads: attention heads to try; 0 means one head per channel for "attention" and the
            default 8 heads for "augmented".
        tuner: "random", "bayesian" or "hyperband".
        objective: "val_roc_auc" or "val_pr_auc" (maximised).
        max_trials: trained candidates at most (random and bayesian; hyperband ends by itself).
        hyperband_factor, hyperband_iterations: Hyperband's reduction factor and sweeps.
        initial_points: random trials before Bayesian optimisation models the objective
            (None: keras-tuner's default, 3 x the number of hyperparameters).
        directory, project_name: where the trials go; a rerun resumes there.
        max_gflops, max_params, max_peak_activation_mb: budgets (None: no limit); peak memory
            in MiB for one example.
        max_draws: candidates drawn per trial before the search gives up finding one in budget.
        final_epochs: epochs of the best candidate's retraining (0: no retraining).
        latency_frames: input frames of the TFLite latency measurement.
        latency_runs: timed TFLite invocations per candidate (their median is reported).
        report_dir: where the report goes (None: directory/project_name/report).
    """

    # A search trains many candidates: shorter trials than one run's defaults.
    epochs: int = 10
    patience: int = 10
    layers: List = dataclasses.field(default_factory=lambda: list(LAYER_CHOICES))
    activations: List = dataclasses.field(default_factory=lambda: list(ACTIVATION_CHOICES))
    widths: List[float] = dataclasses.field(default_factory=lambda: [0.5, 1.0])
    heads: List[int] = dataclasses.field(default_factory=lambda: [0, 8])
    tuner: str = "random"
    objective: str = "val_roc_auc"
    max_trials: int = 20
    hyperband_factor: int = 3
    hyperband_iterations: int = 1
    initial_points: Optional[int] = None
    directory: str = "runs/search"
    project_name: str = "vggish"
    max_gflops: Optional[float] = None
    max_params: Optional[int] = None
    max_peak_activation_mb: Optional[float] = None
    max_draws: int = 500
    final_epochs: int = 30
    latency_frames: int = FULL_FRAMES
    latency_runs: int = 10
    report_dir: Optional[str] = None

    def __post_init__(self):
        super().__post_init__()
        if self.tuner not in TUNERS:
            raise ValueError(f"tuner must be one of {TUNERS}, got {self.tuner!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {self.objective!r}")
        for name in ("max_trials", "max_draws", "latency_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.final_epochs < 0:
            raise ValueError(f"final_epochs must be >= 0, got {self.final_epochs}")
        self.space()  # validates the choices

    def space(self) -> "SearchSpace":
        return SearchSpace(
            layers=_per_block(self.layers, LAYER_CHOICES, "layers"),
            activations=_per_block(self.activations, ACTIVATION_CHOICES, "activations"),
            widths=_choices(self.widths, "widths", float),
            heads=_choices(self.heads, "heads", int),
        )

    def budget(self) -> "Budget":
        peak_mb = self.max_peak_activation_mb
        return Budget(
            max_gflops=self.max_gflops,
            max_params=self.max_params,
            max_peak_bytes=None if peak_mb is None else int(peak_mb * 2**20),
        )

    @property
    def project_dir(self) -> str:
        return os.path.join(self.directory, self.project_name)

    @property
    def report_path(self) -> str:
        return self.report_dir or os.path.join(self.project_dir, "report")

    def train_config(self) -> TrainConfig:
        """A training config of this search's data and training fields (`FitSettings`)."""
        shared = dataclasses.fields(FitSettings)
        return TrainConfig(**{field.name: getattr(self, field.name) for field in shared})

    @classmethod
    def from_yaml(cls, path: str, **overrides) -> "SearchConfig":
        """`tfmood.train.config.load_config` of this class: a YAML config, `overrides` win."""
        return load_config(cls, path, **overrides)

    def to_yaml(self, path: str) -> None:
        """`tfmood.train.config.save_config`: written atomically, read back equal."""
        save_config(self, path)


def _choices(values, name: str, kind: type) -> Tuple:
    if isinstance(values, (str, int, float)):
        values = [values]
    values = tuple(kind(v) for v in values)
    if not values or len(set(values)) != len(values):
        raise ValueError(f"{name} needs distinct values, got {list(values)}")
    return values


def _per_block(values, valid: Sequence[str], name: str) -> Tuple[Tuple[str, ...], ...]:
    """One list for every block, or one list per block, checked against `valid`."""
    if isinstance(values, str):
        values = [values]
    if values and all(isinstance(v, (list, tuple)) for v in values):
        if len(values) != N_BLOCKS:
            raise ValueError(f"{name} needs one list or {N_BLOCKS} lists, got {len(values)}")
        blocks = tuple(_choices(v, name, str) for v in values)
    else:
        blocks = (_choices(values, name, str),) * N_BLOCKS
    unknown = sorted({v for block in blocks for v in block} - set(valid))
    if unknown:
        raise ValueError(f"unknown {name} {unknown}; valid: {list(valid)}")
    return blocks


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The choices: per block layers and activations, widths, heads (0: the layer default)."""

    layers: Tuple[Tuple[str, ...], ...]
    activations: Tuple[Tuple[str, ...], ...]
    widths: Tuple[float, ...]
    heads: Tuple[int, ...]


# --------------------------------------------------------------------------------------------
# Cost of a candidate and the budget


@dataclasses.dataclass(frozen=True)
class CandidateCost:
    """Trainable parameters, multiply-accumulates and peak activation bytes at 96 x 1400."""

    trainable_params: int
    macs: int
    peak_activation_bytes: int

    @property
    def gflops(self) -> float:
        return 2 * self.macs / 1e9

    def as_dict(self) -> dict:
        return {
            "trainable_params": self.trainable_params,
            "gflops": round(self.gflops, 4),
            "peak_activation_mb": round(self.peak_activation_bytes / 2**20, 1),
        }


@dataclasses.dataclass(frozen=True)
class Budget:
    """Limits a candidate must meet (None: no limit)."""

    max_gflops: Optional[float] = None
    max_params: Optional[int] = None
    max_peak_bytes: Optional[int] = None

    def violations(self, cost: CandidateCost) -> List[str]:
        """Why `cost` is over budget (empty when within)."""
        found = []
        if self.max_gflops is not None and cost.gflops > self.max_gflops:
            found.append(f"{cost.gflops:.2f} GFLOPs > {self.max_gflops:g}")
        if self.max_params is not None and cost.trainable_params > self.max_params:
            found.append(f"{cost.trainable_params:,} params > {self.max_params:,}")
        if self.max_peak_bytes is not None and cost.peak_activation_bytes > self.max_peak_bytes:
            found.append(
                f"peak activation {cost.peak_activation_bytes / 2**20:,.0f} MiB > "
                f"{self.max_peak_bytes / 2**20:,.0f} MiB"
            )
        return found


def peak_activation_bytes(model, dtype_bytes: int = 4) -> int:
    """tfmood.models.complexity's peak (largest input plus output of a layer), raised to the
    working set inside a layer that counts its own (`count_activation_bytes`: the attention
    layers)."""
    from tfmood.models.complexity import model_complexity

    peak = model_complexity(model, dtype_bytes).peak_activation_bytes
    for layer in model.layers:
        if hasattr(layer, "count_activation_bytes"):
            inner = layer.count_activation_bytes(tuple(layer.input.shape[1:]), dtype_bytes)
            peak = max(peak, int(inner))
    return peak


@functools.lru_cache(maxsize=1024)
def candidate_cost(config) -> CandidateCost:
    """The cost of a `VGGishConfig` at the full 96 x 1400 input (built, never run)."""
    from tfmood.models.complexity import model_complexity
    from tfmood.models.vggish import build_model

    model = build_model(config.replace(n_mels=FULL_MELS, n_frames=FULL_FRAMES))
    complexity = model_complexity(model)
    return CandidateCost(complexity.trainable_params, complexity.macs, peak_activation_bytes(model))


# --------------------------------------------------------------------------------------------
# The hypermodel


class VGGishHyperModel(keras_tuner.HyperModel):
    """The VGG-ish family as a keras-tuner HyperModel.

    Args:
        space: the choices.
        n_frames: input frames of the trained models.
        n_tags: output tags.
        learning_rate: Adam learning rate.
        dropout: dropout before the dense layer.
    """

    def __init__(
        self,
        space: SearchSpace,
        n_frames: int = FULL_FRAMES,
        n_tags: Optional[int] = None,
        learning_rate: float = 1e-4,
        dropout: float = 0.5,
    ):
        from tfmood.data.tags import N_TAGS

        super().__init__(name="vggish")
        self.space = space
        self.n_frames = n_frames
        self.n_tags = n_tags or N_TAGS
        self.learning_rate = learning_rate
        self.dropout = dropout

    def model_config(self, hp):
        """The `VGGishConfig` the hyperparameters choose (registering them in `hp`)."""
        from tfmood.models.vggish import VGGishConfig

        layers = tuple(
            hp.Choice(f"block_{i}_layer", list(choices))
            for i, choices in enumerate(self.space.layers, start=1)
        )
        activations = tuple(
            hp.Choice(f"block_{i}_activation", list(choices))
            for i, choices in enumerate(self.space.activations, start=1)
        )
        width = hp.Choice("width", list(self.space.widths))
        heads = hp.Choice("heads", list(self.space.heads))
        return VGGishConfig(
            layers=layers,
            activations=activations,
            heads=heads or None,
            width=width,
            n_tags=self.n_tags,
            n_frames=self.n_frames,
            dropout=self.dropout,
        )

    def config_of_values(self, values: dict):
        """The `VGGishConfig` of a dict of hyperparameter values."""
        hp = keras_tuner.HyperParameters()
        hp.values = dict(values)
        return self.model_config(hp)

    def build(self, hp) -> keras.Model:
        from tfmood.models.vggish import build_model

        model = build_model(self.model_config(hp), name="vggish")
        model.compile(
            optimizer=keras.optimizers.Adam(self.learning_rate), loss="binary_crossentropy"
        )
        return model

    def fit(self, hp, model, *args, validation_labels=None, **kwargs):
        """`model.fit` with the ValidationAUC callback first, so the objective is in the logs
        before the tuner's callbacks (passed in `kwargs["callbacks"]`) read them."""
        from tfmood.train.callbacks import ValidationAUC

        validation = kwargs.get("validation_data")
        if validation is None:
            raise ValueError("the search needs validation_data for its AUC objective")
        if validation_labels is None:
            validation_labels = labels_of(validation)
        callbacks = [ValidationAUC(validation, validation_labels)]
        callbacks += list(kwargs.pop("callbacks", None) or [])
        return model.fit(*args, callbacks=callbacks, **kwargs)


def labels_of(dataset):
    """The (tracks, tags) labels of a (mel, labels) dataset, in its order."""
    return np.concatenate([y for _, y in dataset.as_numpy_iterator()]).astype(bool)


def uses_heads(config) -> bool:
    return any(layer in ("attention", "augmented") for layer in config.layers)


class CandidateCheck:
    """Decides whether the oracle may hand out a candidate: returns None when it may, else
    a record of the values, the reasons and the cost.

    A candidate is refused when its config is invalid, when it is over budget, or when it only
    differs from an allowed one in `heads` while no block uses attention (a duplicate).
    """

    def __init__(self, hypermodel: VGGishHyperModel, budget: Budget):
        self.hypermodel = hypermodel
        self.budget = budget

    def __call__(self, values: dict) -> Optional[dict]:
        values = {k: v for k, v in values.items() if not k.startswith("tuner/")}
        try:
            config = self.hypermodel.config_of_values(values)
            cost = candidate_cost(config)
        except ValueError as error:
            return {"values": values, "reasons": [f"invalid: {error}"], "cost": None}
        reasons = self.budget.violations(cost)
        if not uses_heads(config) and values.get("heads") != self.hypermodel.space.heads[0]:
            reasons.append("duplicate: heads has no effect without an attention block")
        if not reasons:
            return None
        return {"values": values, "reasons": reasons, "cost": cost.as_dict()}


# --------------------------------------------------------------------------------------------
# Oracles that reject candidates over budget before any trial exists


class _BudgetedOracleMixin:
    """Adds `check` (values -> None or a rejection record) to a keras-tuner oracle.

    Rejected values are drawn again, remembered as tried and saved with the oracle state.
    """

    def __init__(self, *args, check: Optional[Callable] = None, max_draws: int = 500, **kwargs):
        super().__init__(*args, **kwargs)
        self.check = check
        self.max_draws = max_draws
        self.rejected: List[dict] = []
        self._rejected_hashes = set()

    def rejection(self, values: dict) -> Optional[dict]:
        """Check `values`; a rejection is logged and remembered."""
        if self.check is None:
            return None
        record = self.check(values)
        if record is not None:
            key = self._compute_values_hash(values)
            if key not in self._rejected_hashes:
                self._rejected_hashes.add(key)
                self.rejected.append(record)
                reasons = "; ".join(record["reasons"])
                print(f"Rejected before training: {describe(record['values'])}: {reasons}")
        return record

    def _duplicate(self, values):
        return super()._duplicate(values) or self._compute_values_hash(values) in (
            self._rejected_hashes
        )

    def _random_values(self):
        for _ in range(self.max_draws):
            values = super()._random_values()
            if values is None:
                return None  # every candidate left is tried or rejected
            if self.rejection(values) is None:
                return values
        print(f"No candidate within the budget in {self.max_draws} draws: the search ends.")
        return None

    def get_state(self):
        state = super().get_state()
        state["rejected"] = self.rejected
        return state

    def set_state(self, state):
        super().set_state(state)
        self.rejected = list(state.get("rejected", []))
        self._rejected_hashes = {self._compute_values_hash(r["values"]) for r in self.rejected}


class BudgetedRandomSearchOracle(_BudgetedOracleMixin, keras_tuner.oracles.RandomSearchOracle):
    """RandomSearchOracle that never proposes a candidate `check` rejects."""


class BudgetedHyperbandOracle(_BudgetedOracleMixin, keras_tuner.oracles.HyperbandOracle):
    """HyperbandOracle whose new brackets only hold candidates `check` accepts (promotions
    reuse trained, hence accepted, candidates)."""


class BudgetedBayesianOracle(
    _BudgetedOracleMixin, keras_tuner.oracles.BayesianOptimizationOracle
):
    """BayesianOptimizationOracle whose proposals over budget are replaced by random ones."""

    def populate_space(self, trial_id):
        response = super().populate_space(trial_id)
        values = response.get("values")
        if response["status"] == "RUNNING" and self.rejection(values):
            return self._random_populate_space()
        return response


class _HyperbandTuner(keras_tuner.Hyperband):
    """keras-tuner's Hyperband (epochs per round, weights carried over) with a given oracle."""

    def __init__(self, oracle, hypermodel, **kwargs):
        keras_tuner.Tuner.__init__(self, oracle=oracle, hypermodel=hypermodel, **kwargs)


def make_hypermodel(config: SearchConfig) -> VGGishHyperModel:
    """The hypermodel of `config`'s search space and training settings."""
    return VGGishHyperModel(
        config.space(), config.n_frames, learning_rate=config.learning_rate,
        dropout=config.dropout,
    )


def make_tuner(config: SearchConfig, hypermodel: VGGishHyperModel) -> keras_tuner.Tuner:
    """The tuner of `config.tuner` with a budgeted oracle, resuming from `directory`."""
    common = dict(
        objective=keras_tuner.Objective(config.objective, direction="max"),
        seed=config.seed + 1,  # keras-tuner treats seed 0 as "no seed"
        check=CandidateCheck(hypermodel, config.budget()),
        max_draws=config.max_draws,
    )
    location = dict(directory=config.directory, project_name=config.project_name, overwrite=False)
    if config.tuner == "hyperband":
        oracle = BudgetedHyperbandOracle(
            max_epochs=config.epochs,
            factor=config.hyperband_factor,
            hyperband_iterations=config.hyperband_iterations,
            **common,
        )
        return _HyperbandTuner(oracle, hypermodel, **location)
    if config.tuner == "bayesian":
        oracle = BudgetedBayesianOracle(
            max_trials=config.max_trials, num_initial_points=config.initial_points, **common
        )
    else:
        oracle = BudgetedRandomSearchOracle(max_trials=config.max_trials, **common)
    return keras_tuner.Tuner(oracle=oracle, hypermodel=hypermodel, **location)


def distributed_role() -> str:
    """"single", "chief" or "worker", from keras-tuner's KERASTUNER_* environment variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return "single"
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


# --------------------------------------------------------------------------------------------
# Data and search


def search_datasets(config: SearchConfig):
    """(train, validation, validation labels) through tfmood's training pipeline."""
    from tfmood.train.fit import datasets

    return datasets(config.train_config())


def search(tuner: keras_tuner.Tuner, config: SearchConfig, data=None) -> None:
    """Run (or resume) the search; the chief of a distributed search needs no data."""
    if distributed_role() == "chief":
        tuner.search()
        return
    train, validation, labels = data if data is not None else search_datasets(config)
    tuner.search(
        train,
        validation_data=validation,
        validation_labels=labels,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        verbose=config.verbose,
    )


# --------------------------------------------------------------------------------------------
# Report


def describe(values: dict) -> str:
    """A short name of a candidate: layers / activations, width, heads."""
    layers = "-".join(
        LAYER_CODES.get(values.get(f"block_{i}_layer"), "?") for i in range(1, N_BLOCKS + 1)
    )
    activations = "-".join(
        ACTIVATION_CODES.get(values.get(f"block_{i}_activation"), "?")
        for i in range(1, N_BLOCKS + 1)
    )
    return f"{layers} {activations} w{values.get('width')} h{values.get('heads')}"


def tflite_float32(model) -> bytes:
    """A float32 TFLite flatbuffer with builtin ops only, through the export rewrite
    (`tfmood.deploy.convert.convert`)."""
    from tfmood.deploy.convert import convert

    return convert(model, "float32")


def measure_latency(hypermodel: VGGishHyperModel, values: dict, frames: int, runs: int) -> float:
    """TFLite float32 latency (ms) of a candidate's architecture at 96 x `frames`: the median
    wall time of `runs` single-threaded invokes in LiteRT with its default XNNPACK delegate
    (`tfmood.deploy.runtime.measure_latency`). The weights do not change float32 latency, so a
    freshly built model is measured."""
    from tfmood.deploy.runtime import measure_latency as tflite_latency
    from tfmood.models.vggish import build_model

    config = hypermodel.config_of_values(values).replace(n_frames=frames)
    latency = tflite_latency(tflite_float32(build_model(config)), runs=runs, warmup=2)
    return round(latency["wall_ms"]["median"], 2)


def _trial_row(trial, hypermodel, objective: str) -> dict:
    values = {k: v for k, v in trial.hyperparameters.values.items() if not k.startswith("tuner/")}
    row = {"trial_id": trial.trial_id, "status": trial.status, "name": describe(values)}
    row["values"] = values
    # Hyperband trains a candidate in rounds; a promoted trial continues an earlier one.
    row["epochs"] = trial.hyperparameters.values.get("tuner/epochs")
    row["continues"] = trial.hyperparameters.values.get("tuner/trial_id")
    for metric in OBJECTIVES:
        if trial.metrics.exists(metric):
            row[metric] = round(float(trial.metrics.get_last_value(metric)), 4)
    row["score"] = None if trial.score is None else round(float(trial.score), 4)
    row["objective"] = objective
    row.update(candidate_cost(hypermodel.config_of_values(values)).as_dict())
    return row


def pareto_front(rows: Sequence[dict], quality: str = "score") -> List[dict]:
    """Rows no other row beats on both higher `quality` and lower GFLOPs, by GFLOPs."""
    scored = [r for r in rows if r.get(quality) is not None]
    front = []
    for row in scored:
        dominated = any(
            other[quality] >= row[quality]
            and other["gflops"] <= row["gflops"]
            and (other[quality] > row[quality] or other["gflops"] < row["gflops"])
            for other in scored
        )
        if not dominated:
            front.append(row)
    return sorted(front, key=lambda r: r["gflops"])


def _latencies(rows, hypermodel, config: SearchConfig, cache_path: str) -> None:
    """Fill `latency_ms` in the rows, measuring only what the cache file lacks."""
    from tqdm import tqdm

    cache = _read_json(cache_path, {})
    key = f"{config.latency_frames}"
    todo = [r for r in rows if r["status"] == "COMPLETED" and r["name"] not in cache.get(key, {})]
    for row in tqdm(todo, desc="TFLite latency", disable=not todo or config.verbose == 0):
        latency = measure_latency(hypermodel, row["values"], config.latency_frames,
                                  config.latency_runs)
        cache.setdefault(key, {})[row["name"]] = latency
        atomic.write_text(cache_path, json.dumps(cache, indent=2))
    for row in rows:
        row["latency_ms"] = cache.get(key, {}).get(row["name"])


def collect_report(tuner: keras_tuner.Tuner, hypermodel, config: SearchConfig) -> dict:
    """Every trial (choices, cost, metrics, latency), the rejected candidates, the Pareto front."""
    oracle = tuner.oracle
    trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    rows = [_trial_row(t, hypermodel, config.objective) for t in trials]
    os.makedirs(config.report_path, exist_ok=True)
    _latencies(rows, hypermodel, config, os.path.join(config.report_path, "latency_cache.json"))
    completed = [r for r in rows if r["status"] == "COMPLETED" and r["score"] is not None]
    best = max(completed, key=lambda r: r["score"], default=None)
    rejected = [dict(r, name=describe(r["values"])) for r in getattr(oracle, "rejected", [])]
    return {
        "objective": config.objective,
        "tuner": config.tuner,
        "budget": dataclasses.asdict(config.budget()),
        "input_for_costs": [FULL_MELS, FULL_FRAMES],
        "latency": {"frames": config.latency_frames, "runs": config.latency_runs,
                    "num_threads": 1, "statistic": "median"},
        "trials": rows,
        "rejected": rejected,
        "pareto_front": [r["trial_id"] for r in pareto_front(completed)],
        "best_trial": None if best is None else best["trial_id"],
    }


def _markdown(report: dict) -> str:
    objective = report["objective"]
    front = set(report["pareto_front"])
    lines = [
        f"# Architecture search ({report['tuner']}, objective {objective})",
        "",
        "Layers per block: C = Conv2D, SA = local self-attention, AA = attention-augmented conv; "
        "activations: E = ELU, A = AReLU; w = width, h = heads (0: layer default). Costs at "
        f"{report['input_for_costs'][0]} x {report['input_for_costs'][1]}; TFLite float32 "
        f"latency at 96 x {report['latency']['frames']}, one thread, median of "
        f"{report['latency']['runs']} runs. * = on the Pareto front of {objective} vs GFLOPs.",
        "",
        f"Budget: {report['budget']}",
        "",
        "| trial | candidate | status | val_roc_auc | val_pr_auc | GFLOPs | params | peak MiB "
        "| latency ms |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["trials"]:
        mark = "*" if row["trial_id"] in front else ""
        lines.append(
            f"| {row['trial_id']}{mark} | {row['name']} | {row['status']} "
            f"| {_fmt(row.get('val_roc_auc'))} | {_fmt(row.get('val_pr_auc'))} "
            f"| {row['gflops']:.2f} | {row['trainable_params']:,} "
            f"| {row['peak_activation_mb']:,.1f} | {_fmt(row.get('latency_ms'), '.1f')} |"
        )
    lines += ["", f"Best trial: {report['best_trial']}", ""]
    lines += [f"## Rejected before training ({len(report['rejected'])})", ""]
    for record in report["rejected"]:
        lines.append(f"- {record['name']}: {'; '.join(record['reasons'])}")
    return "\n".join(lines) + "\n"


def _fmt(value, spec: str = ".4f") -> str:
    return "" if value is None else format(value, spec)


def plot_pareto(report: dict, path: str) -> str:
    """PNG scatter of the objective against GFLOPs, the Pareto front joined by a line."""
    rows = [r for r in report["trials"] if r.get("score") is not None]
    front = [r for r in rows if r["trial_id"] in set(report["pareto_front"])]
    front.sort(key=lambda r: r["gflops"])
    figure = plotting.new_figure((7, 5))
    axes = figure.subplots()
    axes.scatter([r["gflops"] for r in rows], [r["score"] for r in rows], c="tab:blue",
                 label="trials")
    axes.plot([r["gflops"] for r in front], [r["score"] for r in front], "o-", c="tab:red",
              label="Pareto front")
    for row in rows:
        axes.annotate(row["trial_id"], (row["gflops"], row["score"]), fontsize=7,
                      xytext=(3, 3), textcoords="offset points")
    limit = report["budget"].get("max_gflops")
    if limit is not None:
        axes.axvline(limit, ls="--", c="grey", label="GFLOPs budget")
    axes.set_xlabel("GFLOPs (96 x 1400)")
    axes.set_ylabel(report["objective"])
    axes.legend()
    figure.tight_layout()
    plotting.save_png(figure, path)
    return path


def write_report(tuner: keras_tuner.Tuner, hypermodel, config: SearchConfig) -> dict:
    """Write report.json, report.md, pareto.png and the config under `config.report_path`."""
    report = collect_report(tuner, hypermodel, config)
    out = config.report_path
    atomic.write_text(os.path.join(out, "report.json"), json.dumps(report, indent=2))
    atomic.write_text(os.path.join(out, "report.md"), _markdown(report))
    plot_pareto(report, os.path.join(out, "pareto.png"))
    config.to_yaml(os.path.join(out, "config.yaml"))
    return report


# --------------------------------------------------------------------------------------------
# Retraining the best candidate


def retrain_best(report: dict, hypermodel, config: SearchConfig, data=None) -> Optional[dict]:
    """Train the best trial's candidate for `final_epochs` and save `best.keras` in the report
    directory (best epoch by the objective); resumes, and skips a finished retraining."""
    if report["best_trial"] is None or config.final_epochs == 0:
        return None
    from tfmood.train.callbacks import (
        AtomicBackupAndRestore,
        BestCheckpointEarlyStopping,
        ValidationAUC,
    )

    out = config.report_path
    result_path = os.path.join(out, "best_result.json")
    previous = _read_json(result_path, None)
    if previous is not None and previous.get("trial_id") == report["best_trial"]:
        return previous
    row = next(r for r in report["trials"] if r["trial_id"] == report["best_trial"])
    train, validation, labels = data if data is not None else search_datasets(config)
    keras.utils.set_random_seed(config.seed)
    hp = keras_tuner.HyperParameters()
    hp.values = dict(row["values"])
    model = hypermodel.build(hp)
    model_path = os.path.join(out, "best.keras")
    history_csv = os.path.join(out, "best_history.csv")
    selector = BestCheckpointEarlyStopping(model_path, history_csv, config.objective,
                                           config.patience)
    model.fit(
        train,
        validation_data=validation,
        epochs=config.final_epochs,
        steps_per_epoch=config.steps_per_epoch,
        callbacks=[
            ValidationAUC(validation, labels),
            selector,
            keras.callbacks.CSVLogger(history_csv, append=True),
            AtomicBackupAndRestore(os.path.join(out, "best_backup")),
        ],
        verbose=config.verbose,
    )
    result = {"trial_id": row["trial_id"], "name": row["name"], "model": model_path,
              "best_epoch": selector.best_epoch + 1, config.objective: float(selector.best)}
    atomic.write_text(result_path, json.dumps(result, indent=2))
    return result


def run_search(config: SearchConfig) -> Optional[dict]:
    """Search, report and retrain: the job behind `tfmood search` and training/search.py.

    Returns the report (with the retraining result under "best_model"), or None on a worker of
    a distributed search (the chief writes the report).
    """
    keras.utils.set_random_seed(config.seed)
    role = distributed_role()
    data = None if role == "chief" else search_datasets(config)
    hypermodel = make_hypermodel(config)
    tuner = make_tuner(config, hypermodel)
    search(tuner, config, data)
    if role == "worker":
        return None
    report = write_report(tuner, hypermodel, config)
    report["best_model"] = retrain_best(report, hypermodel, config, data)
    return report


# --------------------------------------------------------------------------------------------
# Files


def _read_json(path: str, default):
    if not os.path.exists(path):
        return default
    with open(path) as handle:
        return json.load(handle)
