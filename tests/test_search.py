import json
import os
from pathlib import Path

import keras_tuner
import numpy as np
import pytest

from tfmood.models.vggish import VGGishConfig
from tfmood.train.search import (
    Budget,
    BudgetedBayesianOracle,
    BudgetedHyperbandOracle,
    BudgetedRandomSearchOracle,
    CandidateCheck,
    CandidateCost,
    SearchConfig,
    VGGishHyperModel,
    candidate_cost,
    pareto_front,
    run_search,
)

REPO = Path(__file__).resolve().parents[1]
MIB = 2**20


def with_block(kind, block, width=1.0):
    layers = tuple(kind if i == block else "conv" for i in range(1, 6))
    return VGGishConfig(layers=layers, width=width)


def test_costs_match_the_paper_and_count_attention_memory():
    sa3 = candidate_cost(with_block("attention", 3))
    assert sa3.trainable_params == 350_074 and round(sa3.gflops, 2) == 2.94
    # Local attention in block 1: shifted keys, shifted values and scores, 9 per output value.
    sa1 = candidate_cost(with_block("attention", 1))
    assert sa1.peak_activation_bytes == 3 * 9 * 96 * 1400 * 64 * 4
    # Full attention in block 3 (24 x 87 positions, 8 heads): logits plus softmax.
    aa3 = candidate_cost(with_block("augmented", 3))
    assert aa3.peak_activation_bytes == 2 * 8 * (24 * 87) ** 2 * 4
    # The baseline's peak is bn_1's input plus output (96 x 1400 x 64, twice).
    assert candidate_cost(VGGishConfig()).peak_activation_bytes == 2 * 96 * 1400 * 64 * 4


def test_budget_violations():
    cost = CandidateCost(trainable_params=500_000, macs=2 * 10**9, peak_activation_bytes=300 * MIB)
    assert Budget().violations(cost) == []
    within = Budget(max_gflops=4.0, max_params=500_000, max_peak_bytes=300 * MIB)
    assert within.violations(cost) == []
    reasons = Budget(max_gflops=3.9, max_params=499_999, max_peak_bytes=299 * MIB).violations(cost)
    assert len(reasons) == 3 and "4.00 GFLOPs" in reasons[0] and "peak activation" in reasons[2]


def test_pareto_front():
    rows = [
        {"trial_id": "a", "score": 0.70, "gflops": 3.0},
        {"trial_id": "b", "score": 0.72, "gflops": 3.5},
        {"trial_id": "c", "score": 0.69, "gflops": 3.2},  # dominated by a
        {"trial_id": "d", "score": 0.65, "gflops": 1.0},
        {"trial_id": "e", "score": 0.70, "gflops": 3.1},  # dominated by a (same score)
    ]
    assert [r["trial_id"] for r in pareto_front(rows)] == ["d", "a", "b"]


def test_config_validation_and_shipped_yaml(tmp_path):
    config = SearchConfig.from_yaml(str(REPO / "training" / "configs" / "search.yaml"))
    assert config.space().layers[0] and config.budget().max_peak_bytes is not None
    with pytest.raises(ValueError, match="tuner"):
        SearchConfig(tuner="grid")
    with pytest.raises(ValueError, match="unknown layers"):
        SearchConfig(layers=["conv", "dense"])
    with pytest.raises(ValueError, match="5 lists"):
        SearchConfig(layers=[["conv"], ["conv"]])
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_trial: 3\n")
    with pytest.raises(ValueError, match="unknown config field"):
        SearchConfig.from_yaml(str(bad))


def test_hypermodel_maps_hyperparameters_to_the_model_config():
    config = SearchConfig(layers=[["conv"], ["conv"], ["attention", "conv"], ["conv"], ["conv"]],
                          widths=[0.25], heads=[4, 0])
    hypermodel = VGGishHyperModel(config.space(), n_frames=320)
    hp = keras_tuner.HyperParameters()
    model = hypermodel.build(hp)  # the first choice of everything
    blocks = {f"block_{i}_{kind}" for i in range(1, 6) for kind in ("layer", "activation")}
    assert {h.name for h in hp.space} == blocks | {"width", "heads"}
    assert type(model.get_layer("conv_3")).__name__ == "LocalSelfAttention"
    assert model.get_layer("conv_3").heads == 4 and model.get_layer("conv_1").filters == 16
    values = dict(hp.values, block_3_layer="conv", block_5_activation="arelu", heads=0)
    mapped = hypermodel.config_of_values(values)
    assert mapped.layers == ("conv",) * 5 and mapped.activations[4] == "arelu"
    assert mapped.heads is None and mapped.n_frames == 320


BOTH = ["augmented", "conv"]
SPACE = SearchConfig(
    layers=[["conv"], BOTH, BOTH, BOTH, ["conv"]],
    activations=["elu"],
    widths=[0.25],
    heads=[0],
)


def feasible(values):
    return values["block_2_layer"] == "conv" and values["block_3_layer"] == "conv"


@pytest.mark.parametrize("oracle_class", [BudgetedRandomSearchOracle, BudgetedBayesianOracle,
                                          BudgetedHyperbandOracle])
def test_oracle_rejects_over_budget_without_counting_them(oracle_class, tmp_path):
    # 256 MiB rejects attention-augmented blocks 2 (17 GiB) and 3 (266 MiB) at width 0.25;
    # block 4 (12 x 21 positions) is fine: 2 of the 8 candidates are within budget.
    hypermodel = VGGishHyperModel(SPACE.space(), n_frames=320)
    check = CandidateCheck(hypermodel, Budget(max_peak_bytes=256 * MIB))
    options = dict(max_epochs=2) if oracle_class is BudgetedHyperbandOracle else dict(max_trials=3)
    oracle = oracle_class(objective=keras_tuner.Objective("val_roc_auc", "max"), seed=3,
                          check=check, **options)
    oracle._set_project_dir(str(tmp_path), "p")
    hp = keras_tuner.HyperParameters()
    hypermodel.build(hp)
    oracle.update_space(hp)
    trials = [oracle.create_trial(f"tuner{i}") for i in range(2)]
    assert [t.status for t in trials] == ["RUNNING", "RUNNING"]
    assert all(feasible(t.hyperparameters.values) for t in trials)
    assert len(oracle.trials) == 2 and oracle.rejected
    assert all(not feasible(r["values"]) for r in oracle.rejected)
    assert all("peak activation" in r["reasons"][0] for r in oracle.rejected)
    if oracle_class is not BudgetedHyperbandOracle:
        # Every candidate left is over budget: the search ends instead of failing trials.
        assert oracle.create_trial("tuner2").status == "STOPPED"
        assert len(oracle.trials) == 2
        # The rejections are part of the saved state.
        state = json.loads(json.dumps(oracle.get_state()))
        assert len(state["rejected"]) == len(oracle.rejected)


def write_tiny_corpus(root):
    from tfmood.data.synth import generate_corpus

    generate_corpus(str(root), n_tracks=24, seconds=4.0, seed=0, progress=False)
    return root


@pytest.mark.slow
def test_tiny_search_end_to_end_resumes(tmp_path, monkeypatch):
    from tfmood.cli import main
    from tfmood.models.vggish import load_model

    corpus = write_tiny_corpus(tmp_path / "corpus")
    config_path = tmp_path / "search.yaml"
    config_path.write_text(
        f"""
train_tsv: {corpus}/autotagging_moodtheme-train.tsv
validation_tsv: {corpus}/autotagging_moodtheme-validation.tsv
train_root: {corpus}/audio
source: audio
n_frames: 320
batch_size: 8
layers: [[conv], [conv, augmented], [conv], [conv], [conv, attention]]
activations: [elu]
widths: [0.25]
heads: [0]
max_trials: 3
epochs: 1
max_peak_activation_mb: 256
directory: {tmp_path}/runs
project_name: tiny
final_epochs: 1
latency_frames: 320
latency_runs: 2
verbose: 0
"""
    )
    assert main(["search", "--config", str(config_path)]) == 0

    report_dir = tmp_path / "runs" / "tiny" / "report"
    report = json.loads((report_dir / "report.json").read_text())
    # Two candidates fit the budget; max_trials 3 cannot be reached and the search still ends.
    assert [t["status"] for t in report["trials"]] == ["COMPLETED", "COMPLETED"]
    assert {t["values"]["block_2_layer"] for t in report["trials"]} == {"conv"}
    assert report["rejected"] and all(
        r["values"]["block_2_layer"] == "augmented" for r in report["rejected"])
    for trial in report["trials"]:
        assert 0.0 <= trial["val_roc_auc"] <= 1.0 and 0.0 <= trial["val_pr_auc"] <= 1.0
        assert trial["gflops"] > 0 and trial["trainable_params"] > 0 and trial["latency_ms"] > 0
        assert trial["peak_activation_mb"] > 0
    assert report["best_trial"] in report["pareto_front"]
    assert "Rejected before training (" in (report_dir / "report.md").read_text()
    assert (report_dir / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    best = load_model(str(report_dir / "best.keras"))
    assert best.output_shape == (None, 56)

    # Resume: nothing is trained again, the report is rewritten from the saved trials.
    trial_files = sorted((tmp_path / "runs" / "tiny").glob("trial_*/trial.json"))
    stamps = [os.stat(f).st_mtime_ns for f in trial_files]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished trial was trained again")

    monkeypatch.setattr(VGGishHyperModel, "fit", no_training)
    monkeypatch.setattr("keras.Model.fit", no_training)
    again = run_search(SearchConfig.from_yaml(str(config_path)))
    assert [t["trial_id"] for t in again["trials"]] == [t["trial_id"] for t in report["trials"]]
    assert [os.stat(f).st_mtime_ns for f in trial_files] == stamps
    assert np.isclose(again["trials"][0]["val_roc_auc"], report["trials"][0]["val_roc_auc"])
