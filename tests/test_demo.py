import json
import os

import numpy as np
import pytest

from tfmood.demo import DemoConfig, results_table, run_demo


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("demo"))
    config = DemoConfig(out_dir=out, tracks=40, seconds=4, presets=("baseline", "sa3", "arelu"),
                        n_frames=320, width=0.125, epochs=1, patience=1, batch_size=8,
                        export=False)
    rows = run_demo(config)
    return config, rows


def test_demo_writes_models_predictions_and_tables(tiny_demo):
    config, rows = tiny_demo
    out = config.out_dir
    for preset in config.presets:
        assert os.path.exists(os.path.join(out, "models", preset, "best.keras"))
        assert os.path.exists(os.path.join(out, "models", preset, "curves.png"))
        predictions = np.load(os.path.join(out, "test", preset, "predictions.npy"))
        groundtruth = np.load(os.path.join(out, "test", preset, "groundtruth.npy"))
        assert predictions.shape == groundtruth.shape
    assert set(rows) == {"baseline", "sa3", "arelu", "late fusion sa3 + arelu",
                         "late fusion baseline + sa3 + arelu"}
    table = open(os.path.join(out, "results.md")).read()
    assert "| 2 | sa3 | 2.94 | 350,074 |" in table
    saved = json.load(open(os.path.join(out, "results.json")))
    assert [r["model"] for r in saved["rows"]][:3] == ["baseline", "sa3", "arelu"]


def test_fusion_is_the_mean_of_the_members_scores(tiny_demo):
    config, _ = tiny_demo
    test_dir = os.path.join(config.out_dir, "test")
    members = [np.load(os.path.join(test_dir, p, "predictions.npy")) for p in ("sa3", "arelu")]
    fused = np.load(os.path.join(config.out_dir, "fusion", "sa3+arelu", "predictions.npy"))
    np.testing.assert_allclose(fused, (members[0] + members[1]) / 2, rtol=1e-6)


def test_second_run_reuses_finished_work(tiny_demo):
    config, rows = tiny_demo
    best = os.path.join(config.out_dir, "models", "baseline", "best.keras")
    stamp = os.path.getmtime(best)
    again = run_demo(config)
    assert os.path.getmtime(best) == stamp
    assert again["baseline"]["roc_auc"] == pytest.approx(rows["baseline"]["roc_auc"])


def test_results_table_has_the_paper_columns():
    table = results_table([{"model": "baseline", "gflops": 3.3246, "params": 448122,
                            "demo_params": 100, "roc_auc": 0.9, "pr_auc": 0.5,
                            "train_seconds": 12.0}])
    assert "| 1 | baseline | 3.32 | 448,122 | 100 | 0.900 | 0.500 | 12 s |" in table


def test_config_file_with_command_line_overrides(tmp_path):
    from tfmood.cli import build_parser
    from tfmood.cli._config_options import config_of
    from tfmood.cli.demo import FIELD_OF_OPTION

    path = tmp_path / "demo.yaml"
    path.write_text("presets: [baseline, sa3]\nepochs: 9\nlearning_rate: 1e-3\n"
                    "width: [0.5, 0.5, 1, 1, 1]\nexport: false\n")
    args = build_parser().parse_args(["demo", "--config", str(path), "--epochs", "2"])
    config = config_of(DemoConfig, args, FIELD_OF_OPTION)
    assert (config.presets, config.epochs, config.learning_rate) == (("baseline", "sa3"), 2, 1e-3)
    assert (config.width, config.export, config.tracks) == ((0.5, 0.5, 1.0, 1.0, 1.0), False, 1200)
    defaults = config_of(DemoConfig, build_parser().parse_args(["demo"]), FIELD_OF_OPTION)
    assert defaults == DemoConfig()
