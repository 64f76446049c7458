import json

import numpy as np
import pytest

from tfmood.cli import main
from tfmood.models.complexity import preset_complexity
from tfmood.models.vggish import PRESETS, VGGishConfig, build_model, load_model

# The paper's Table 1 (56 tags, 96 x 1400 input).
TABLE_1 = {
    "baseline": (3.32, 448_122),
    "sa3": (2.94, 350_074),
    "sa4": (3.28, 350_074),
    "sa5": (3.32, 399_098),
    "arelu": (3.32, 448_132),
}


def conv_macs(height, width, c_in, c_out):
    return height * width * c_in * c_out * 9


def attention_macs(height, width, c_in, c_out):
    projections = height * width * c_in * c_out + 2 * (height + 2) * (width + 2) * c_in * c_out
    return projections + 2 * height * width * c_out * 9


def hand_macs(attention_block=None):
    """MACs worked out from the block shapes at 96 x 1400 (spatial sizes after each pool)."""
    blocks = [(96, 1400, 1, 64), (48, 350, 64, 128), (24, 87, 128, 128), (12, 21, 128, 128),
              (4, 4, 128, 64)]
    total = 64 * 56  # dense
    for index, shape in enumerate(blocks, start=1):
        total += attention_macs(*shape) if index == attention_block else conv_macs(*shape)
    return total


@pytest.mark.parametrize("preset", sorted(TABLE_1))
def test_table_1_parameters_and_gflops(preset):
    gflops, params = TABLE_1[preset]
    complexity = preset_complexity(preset)
    assert complexity.trainable_params == params
    assert round(complexity.gflops, 2) == gflops


def test_macs_match_hand_computation():
    assert hand_macs() == 1_662_275_072
    assert hand_macs(3) == 1_469_232_640
    for preset, block in [("baseline", None), ("sa3", 3), ("sa4", 4), ("sa5", 5)]:
        assert preset_complexity(preset).macs == hand_macs(block)


def test_sa3_arelu_combines_both_changes():
    complexity = preset_complexity("sa3-arelu")
    assert complexity.trainable_params == 350_074 + 10
    assert complexity.macs == hand_macs(3)


def test_summary_cli_prints_table_1_numbers(capsys):
    assert main(["summary", "--preset", "sa3", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == {**report, "preset": "sa3", "trainable_params": 350_074, "gflops": 2.94}


def test_global_last_pool_accepts_any_length_and_matches_fixed_length():
    fixed = build_model("baseline")
    free = build_model("baseline", n_frames=None)
    free.set_weights(fixed.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 96, 1400)).astype("float32")
    np.testing.assert_allclose(free.predict(x, verbose=0), fixed.predict(x, verbose=0), atol=1e-6)
    longer = np.random.default_rng(1).normal(size=(1, 96, 2000)).astype("float32")
    assert free.predict(longer, verbose=0).shape == (1, 56)


@pytest.mark.parametrize("overrides, message", [
    ({"layers": ("conv",) * 4}, "5 entries"),
    ({"layers": ("conv",) * 4 + ("lstm",)}, "unknown layers"),
    ({"activations": ("relu",) * 5}, "unknown activations"),
    ({"n_frames": 100}, "n_frames"),
    ({"n_mels": 16}, "n_mels"),
    ({"width": (0.5, 1.0)}, "1 or 5 values"),
    ({"width": (0.5, 1.0, 1.0, 0.0, 1.0)}, "positive"),
    ({"width": "wide"}, "a number or 5 numbers"),
])
def test_bad_configs_are_rejected(overrides, message):
    with pytest.raises(ValueError, match=message):
        VGGishConfig(**overrides)


def test_unknown_preset_lists_valid_ones():
    with pytest.raises(ValueError, match="baseline"):
        build_model("vgg19")


def test_width_and_tags_are_configurable():
    model = build_model("sa3", width=0.5, n_tags=10, n_frames=None)
    assert model.get_layer("conv_1").filters == 32
    assert model.output_shape == (None, 10)


def test_per_block_width_sets_each_block_s_channels():
    # 64, 128, 128, 128, 64 channels times (0.25, 0.25, 0.5, 1, 1), rounded to even numbers.
    model = build_model("sa3", width="0.25, 0.25,0.5,1,1", n_frames=None)
    filters = [model.get_layer(f"conv_{b}").filters for b in range(1, 6)]
    assert filters == [16, 32, 64, 128, 64]
    assert VGGishConfig(width=[0.5] * 5).width == (0.5,) * 5
    assert VGGishConfig(width="0.5").width == 0.5


def test_every_preset_saves_and_loads_with_safe_mode(tmp_path):
    x = np.random.default_rng(2).normal(size=(1, 96, 400)).astype("float32")
    for preset in PRESETS:
        model = build_model(preset, n_frames=None)
        path = tmp_path / f"{preset}.keras"
        model.save(path)
        loaded = load_model(str(path))
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                                   atol=1e-6)


def test_load_model_names_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        load_model(str(tmp_path / "missing.keras"))
