"""`tfmood import-torch` and `tfmood predict`, end to end against PyTorch's outputs."""

import os
import pickle

import numpy as np
import pytest

from tfmood.cli import main
from tfmood.cli.predict import load_mel_batch

PARITY_TOLERANCE = 1e-4


@pytest.mark.parametrize(
    "folder, weights", [("mtg_baseline", "best_model.pth"), ("augment_sa3", "random_init.pth")]
)
def test_import_then_predict_matches_pytorch(reference_dir, tmp_path, capsys, folder, weights):
    model_path = tmp_path / "imported.keras"
    assert main(["import-torch", str(reference_dir / folder / weights), "-o", str(model_path)]) == 0
    with np.load(reference_dir / folder / "io.npz", allow_pickle=False) as reference:
        x, y = reference["x"], reference["y"]
    np.save(tmp_path / "x.npy", x)
    # Batch size 2 over 3 examples: a full batch and a partial one.
    argv = ["predict", "--model", str(model_path), "--input", str(tmp_path / "x.npy")]
    assert main(argv + ["-o", str(tmp_path / "y.npy"), "--batch-size", "2"]) == 0
    scores = np.load(tmp_path / "y.npy", allow_pickle=False)
    assert scores.shape == y.shape and scores.dtype == np.float32
    difference = float(np.abs(scores - y).max())
    print(f"{folder}: CLI max abs difference to PyTorch {difference:.3g}")
    assert difference < PARITY_TOLERANCE
    # Only the outputs remain: the temporary files were renamed into place.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["imported.keras", "x.npy", "y.npy"]


def test_import_refuses_a_mismatching_preset(reference_dir, tmp_path, capsys):
    weights = reference_dir / "augment_sa3" / "random_init.pth"
    output = tmp_path / "out.keras"
    assert main(["import-torch", str(weights), "--preset", "baseline", "-o", str(output)]) == 2
    error = capsys.readouterr().err
    assert "random_init.pth" in error and "missing keys ['conv_3.weight', 'conv_3.bias']" in error
    assert list(tmp_path.iterdir()) == []


class RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_import_refuses_code_in_the_weights_file(tmp_path, capsys):
    sentinel = tmp_path / "SENTINEL"
    weights = tmp_path / "evil.pth"
    weights.write_bytes(pickle.dumps(RunsCommand(f"touch {sentinel}"), protocol=2))
    output = tmp_path / "out.keras"
    assert main(["import-torch", str(weights), "-o", str(output)]) == 2
    assert "refusing to load global" in capsys.readouterr().err
    assert not sentinel.exists() and not output.exists()


def test_import_needs_a_keras_output(tmp_path, capsys):
    assert main(["import-torch", str(tmp_path / "w.pth"), "-o", str(tmp_path / "out.h5")]) == 2
    assert "out.h5" in capsys.readouterr().err


# --- input validation ---------------------------------------------------------------------------


def _good_batch(n_frames=1400):
    return np.random.default_rng(0).normal(-30, 10, (2, 96, n_frames)).astype(np.float32)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((96, 1400), np.float32), r"expected shape \(N, 96, frames\)"),
        (np.zeros((2, 95, 1400), np.float32), r"expected shape \(N, 96, frames\)"),
        (np.zeros((0, 96, 1400), np.float32), "empty"),
        (np.zeros((2, 96, 1000), np.float32), "takes 1400 frames, the input has 1000"),
        (np.full((1, 96, 1400), np.nan, np.float32), "NaN or infinite"),
        (np.full((1, 96, 1400), np.inf, np.float32), "NaN or infinite"),
        (np.full((1, 96, 1400), "a"), "numeric"),
    ],
)
def test_bad_mel_batches_are_named(tmp_path, array, message):
    path = tmp_path / "mels.npy"
    np.save(path, array)
    with pytest.raises(ValueError, match=message) as error:
        load_mel_batch(str(path), n_mels=96, n_frames=1400)
    assert str(path) in str(error.value)


def test_pickled_input_is_not_loaded(tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="objects.npy"):
        load_mel_batch(str(path))


def test_mel_batch_is_float32_and_any_length_when_allowed(tmp_path):
    path = tmp_path / "mels.npy"
    np.save(path, _good_batch(1500).astype(np.float64))
    mels = load_mel_batch(str(path), n_frames=None)
    assert mels.dtype == np.float32 and mels.shape == (2, 96, 1500)


@pytest.fixture(scope="module")
def small_model_path(tmp_path_factory):
    from tfmood.models.vggish import build_model

    path = tmp_path_factory.mktemp("model") / "baseline.keras"
    build_model("baseline").save(path)
    return path


def test_predict_reports_bad_input_and_writes_nothing(small_model_path, tmp_path, capsys):
    mels = tmp_path / "short.npy"
    np.save(mels, _good_batch(700))
    output = tmp_path / "y.npy"
    argv = ["predict", "--model", str(small_model_path), "--input", str(mels), "-o", str(output)]
    assert main(argv) == 2
    assert "short.npy: the model takes 1400 frames, the input has 700" in capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--batch-size", "0"], "--batch-size must be positive"),
        (["--input", "x.npy"], "needs -o/--output"),
        ([], "nothing to predict"),
        (["song.mp3", "--input", "x.npy", "-o", "y.npy"], "not both"),
    ],
)
def test_predict_argument_errors(small_model_path, capsys, extra, message):
    assert main(["predict", "--model", str(small_model_path)] + extra) == 2
    assert message in capsys.readouterr().err


def test_predict_names_a_missing_model(tmp_path, capsys):
    np.save(tmp_path / "x.npy", _good_batch())
    argv = ["predict", "--model", str(tmp_path / "none.keras"), "--input", str(tmp_path / "x.npy")]
    assert main(argv + ["-o", str(tmp_path / "y.npy")]) == 2
    assert "none.keras" in capsys.readouterr().err


# --- tagging music with the MTG-Jamendo baseline ---------------------------------------------

MUSIC = os.path.join(os.path.dirname(__file__), "data", "music")


def test_predict_tags_music_with_the_mtg_baseline(reference_dir, tmp_path, capsys):
    """Whole tracks = mean of the model's per-window scores; --first-window = the first 1400."""
    from tfmood import tagger
    from tfmood.data import pipeline
    from tfmood.data.features import audio_file_to_mel
    from tfmood.models.torch_import import import_torch

    model = import_torch(reference_dir / "mtg_baseline" / "best_model.pth", preset="baseline")
    model_path = tmp_path / "mtg.keras"
    model.save(model_path)
    files = [os.path.join(MUSIC, "hyperrogue-hell.ogg"),  # 65 s: two windows
             os.path.join(MUSIC, "broken.ogg")]
    whole, first = tmp_path / "whole.csv", tmp_path / "first.jsonl"
    assert main(["predict", "--model", str(model_path), *files, "-o", str(whole)]) == 1
    err = capsys.readouterr().err
    assert "broken.ogg" in err and "1 of 2 files could not be tagged" in err
    argv = ["predict", "--model", str(model_path), files[0], "-o", str(first), "--first-window"]
    assert main(argv) == 0
    mel = audio_file_to_mel(files[0])
    windows = np.stack([mel[:, :1400], mel[:, 1400:2800]])
    assert mel.shape[1] < 2800 + 700  # the remainder is under half a window: dropped
    expected = np.asarray(model(windows, training=False))
    (row,) = tagger.read_results(str(whole))
    assert row["windows"] == 2 and row["scores"].shape == (56,)
    np.testing.assert_allclose(row["scores"], expected.mean(axis=0), atol=1e-4)
    (row,) = tagger.read_results(str(first))
    crop = np.asarray(pipeline.tile_or_crop(mel, 1400))[None]
    np.testing.assert_allclose(row["scores"], np.asarray(model(crop, training=False))[0],
                               atol=1e-4)


def test_shipped_models_tag_real_music_keras_and_int8_tflite(tmp_path, capsys):
    """The default (shipped Keras) model and the shipped int8 phone model on the committed
    excerpts, one of them undecodable: the run goes on, names the failure, exits 1; the int8
    model's logits come back as scores close to the Keras model's."""
    from pathlib import Path

    from tfmood.tagger import DEFAULT_MODEL, read_results

    music = Path(__file__).resolve().parent / "data" / "music"
    int8 = DEFAULT_MODEL.parent / "mtg-jamendo-baseline-int8.tflite"
    results = {}
    for name, extra in (("keras", []), ("int8", ["--model", str(int8)])):
        out = tmp_path / f"{name}.csv"
        status = main(["predict", str(music), "-o", str(out), "--no-progress", *extra])
        captured = capsys.readouterr()
        assert status == 1
        assert "broken.ogg" in captured.err or "broken.ogg" in captured.out
        results[name] = {Path(r["path"]).name: r for r in read_results(str(out))}
    assert len(results["keras"]) == 8 and "broken.ogg" not in results["keras"]
    assert results["keras"].keys() == results["int8"].keys()
    keras = np.stack([results["keras"][k]["scores"] for k in sorted(results["keras"])])
    int8_scores = np.stack([results["int8"][k]["scores"] for k in sorted(results["int8"])])
    assert keras.shape == (8, 56) and ((keras >= 0) & (keras <= 1)).all()
    assert ((int8_scores >= 0) & (int8_scores <= 1)).all()
    assert [results["keras"][k]["windows"] for k in sorted(results["keras"])].count(2) == 4
    assert float(np.abs(int8_scores - keras).mean()) <= 0.01
    top5 = [len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5
            for a, b in zip(keras, int8_scores)]  # fmt: skip
    assert np.mean(top5) >= 0.8, top5
