"""`tfmood.tagger` and `tfmood predict` on audio: windows, averaging, failures, resume, formats."""

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tfmood import tagger
from tfmood.cli import main
from tfmood.data.tags import MOODTHEME_TAGS

MUSIC = Path(__file__).parent / "data" / "music"
GOOD = sorted(str(p) for p in MUSIC.iterdir() if p.suffix in (".ogg", ".mp3") and p.name != "broken.ogg")
BROKEN = str(MUSIC / "broken.ogg")
TOLERANCE = 2e-4


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    import keras

    from tfmood.models.vggish import build_model

    keras.utils.set_random_seed(1)
    model = build_model("baseline", width=0.125)
    # Non-trivial BatchNorm statistics so different windows give clearly different scores.
    for layer in model.layers:
        if layer.name.startswith("bn_init"):
            layer.moving_mean.assign(np.full(layer.moving_mean.shape, -40.0, np.float32))
            layer.moving_variance.assign(np.full(layer.moving_variance.shape, 400.0, np.float32))
    path = tmp_path_factory.mktemp("model") / "small.keras"
    model.save(path)
    return str(path), model


@pytest.fixture(scope="module")
def small_tflite(small_model, tmp_path_factory):
    from tfmood.deploy.convert import convert

    flatbuffer = convert(small_model[1], "float32")
    path = tmp_path_factory.mktemp("tflite") / "small.tflite"
    path.write_bytes(flatbuffer)
    return str(path)


def independent_windows(path, n_frames=1400):
    """Whole-file mel (the features module) cut as documented, without the tagger's code."""
    from tfmood.data.features import audio_file_to_mel

    mel = audio_file_to_mel(path)
    length = mel.shape[1]
    if length < n_frames:
        return np.tile(mel, (1, n_frames // length + 1))[None, :, :n_frames]
    windows = [mel[:, i:i + n_frames] for i in range(0, length - n_frames + 1, n_frames)]
    if length % n_frames >= n_frames / 2:
        windows.append(mel[:, -n_frames:])
    return np.stack(windows)


@pytest.fixture(scope="module")
def expected_scores(small_model):
    """Per file: (mean of the per-window scores, first-window scores), computed independently."""
    from tfmood.data import pipeline
    from tfmood.data.features import audio_file_to_mel

    _, model = small_model
    expected = {}
    for path in GOOD:
        windows = independent_windows(path)
        per_window = np.asarray(model(windows, training=False))
        first = np.asarray(pipeline.tile_or_crop(audio_file_to_mel(path), 1400))
        expected[path] = (per_window.mean(axis=0), len(windows),
                          np.asarray(model(first[None], training=False))[0], per_window)
    return expected


# --- front-end and windows ----------------------------------------------------------------------


def test_log_mel_matches_the_layer():
    from tfmood.data.audio import load_audio
    from tfmood.data.features import waveform_to_mel

    waveform = load_audio(GOOD[0])[: 12000 * 7 + 123]
    fast, layer = tagger.log_mel(waveform), waveform_to_mel(waveform)
    assert fast.shape == layer.shape and fast.dtype == np.float32
    near = layer >= layer.max() - 80
    assert np.abs(fast - layer)[near].max() < 1e-3
    np.testing.assert_array_equal(tagger.log_mel(waveform, max_frames=100), fast[:, :100])


def test_the_filterbank_is_librosas_slaney_filterbank():
    import librosa

    from tfmood.data.mel_filterbank import slaney_mel_filterbank

    for sr, n_fft, n_mels, f_min, f_max in [(12000, 512, 96, 0.0, 6000.0),
                                            (16000, 1024, 128, 20.0, 7000.0)]:
        expected = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=f_min,
                                       fmax=f_max, htk=False, norm="slaney")
        np.testing.assert_allclose(slaney_mel_filterbank(sr, n_fft, n_mels, f_min, f_max),
                                   expected, rtol=1e-5, atol=1e-8)


def test_the_front_end_does_not_import_tensorflow():
    # A TFLite run must not pay for TensorFlow (~650 MB RSS, seconds of a decode thread).
    import subprocess
    import sys

    code = ("import sys; from tfmood import tagger; tagger.load_windows(sys.argv[1]); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code, GOOD[0]], check=True,
                            capture_output=True, text=True).stdout
    assert output.strip().splitlines()[-1] == "[]"


def test_keras_runner_steps_through_a_batch(small_model):
    _, model = small_model
    batch = np.random.default_rng(0).normal(-30, 20, (5, 96, 1400)).astype(np.float32)
    expected = np.asarray(model.predict_on_batch(batch))
    for step in (1, 2, 5):
        got = tagger.KerasRunner(model, step=step)(batch)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("length, starts", [
    (1400, [0]), (2099, [0]), (2100, [0, 700]), (2800, [0, 1400]), (3499, [0, 1400]),
    (3500, [0, 1400, 2100]), (4200, [0, 1400, 2800]),
])
def test_windows_are_consecutive_and_a_long_remainder_ends_the_track(length, starts):
    mel = np.arange(length, dtype=np.float32)[None].repeat(2, axis=0)
    windows = tagger.track_windows(mel, 1400)
    assert windows.shape == (len(starts), 2, 1400)
    assert [int(w[0, 0]) for w in windows] == starts
    assert tagger.n_windows(length, 1400) == len(starts)
    first = tagger.track_windows(mel, 1400, first_window=True)
    assert first.shape == (1, 2, 1400) and first[0, 0, 0] == 0


def test_a_short_track_is_tiled():
    mel = np.arange(600, dtype=np.float32)[None]
    windows = tagger.track_windows(mel, 1400)
    assert windows.shape == (1, 1, 1400)
    np.testing.assert_array_equal(windows[0, 0], np.tile(np.arange(600), 3)[:1400])


def test_find_audio_recurses_and_keeps_named_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ["a/x.MP3", "a/b/y.flac", "a/notes.txt", "z.oga", "a/.hidden.ogg"]:
        (tmp_path / name).write_bytes(b"")
    found = tagger.find_audio([tmp_path, tmp_path / "a" / "notes.txt"])
    names = [os.path.relpath(p, tmp_path) for p in found]
    assert names == ["a/b/y.flac", "a/x.MP3", "z.oga", "a/notes.txt"]
    with pytest.raises(FileNotFoundError, match="nope"):
        tagger.find_audio([tmp_path / "nope"])


# --- the library run ------------------------------------------------------------------------


def _rows(path):
    return {os.path.abspath(r["path"]): r for r in tagger.read_results(str(path))}


def test_keras_library_run_averages_windows_and_lists_failures(
        small_model, expected_scores, tmp_path, capsys):
    output = tmp_path / "tags.csv"
    argv = ["predict", "--model", small_model[0], str(MUSIC), "-o", str(output), "--top", "3",
            "--batch-size", "3"]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "1 of 9 files could not be tagged" in captured.err and "broken.ogg" in captured.err
    rows = _rows(output)
    assert sorted(rows) == sorted(os.path.abspath(p) for p in GOOD)
    assert output.read_text().splitlines()[0] == ",".join(["path", "windows"] + list(MOODTHEME_TAGS))
    n_multi = 0
    for path in GOOD:
        mean, count, _, per_window = expected_scores[path]
        row = rows[os.path.abspath(path)]
        assert row["scores"].shape == (56,) and row["windows"] == count
        np.testing.assert_allclose(row["scores"], mean, atol=TOLERANCE)
        if count > 1:
            n_multi += 1
            assert np.abs(per_window[0] - per_window[1]).max() > 10 * TOLERANCE
        assert os.path.basename(path) in captured.out
    assert n_multi >= 2  # the 65-s excerpts give two windows


def test_first_window_is_the_model_on_the_first_1400_frames(
        small_model, expected_scores, tmp_path, capsys):
    output = tmp_path / "tags.jsonl"
    argv = ["predict", "--model", small_model[0], *GOOD, "-o", str(output), "--first-window",
            "--top", "0"]
    assert main(argv) == 0
    lines = output.read_text().splitlines()
    assert len(lines) == len(GOOD)
    first = json.loads(lines[0])
    assert list(first) == ["path", "windows"] + list(MOODTHEME_TAGS)
    rows = _rows(output)
    for path in GOOD:
        row = rows[os.path.abspath(path)]
        assert row["windows"] == 1
        np.testing.assert_allclose(row["scores"], expected_scores[path][2], atol=TOLERANCE)


def test_tflite_model_tags_the_library(small_model, small_tflite, expected_scores, tmp_path,
                                       capsys):
    output = tmp_path / "tags.csv"
    paths = GOOD[:3] + [BROKEN]
    assert main(["predict", "--model", small_tflite, *paths, "-o", str(output)]) == 1
    assert "broken.ogg" in capsys.readouterr().err
    rows = _rows(output)
    assert len(rows) == 3
    for path in GOOD[:3]:
        np.testing.assert_allclose(rows[os.path.abspath(path)]["scores"],
                                   expected_scores[path][0], atol=1e-3)


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_an_interrupted_run_resumes(small_model, expected_scores, tmp_path, capsys, suffix):
    output = tmp_path / f"tags.{suffix}"
    done = GOOD[:2]
    fake = [0.5] * 56
    if suffix == "csv":
        lines = [",".join(["path", "windows"] + list(MOODTHEME_TAGS))]
        lines += [",".join([p, "7"] + [str(v) for v in fake]) for p in done]
        partial = f"{GOOD[2]},2,0.1,0.2"
    else:
        lines = [json.dumps({"path": p, "windows": 7, **dict(zip(MOODTHEME_TAGS, fake))})
                 for p in done]
        partial = json.dumps({"path": GOOD[2], "windows": 2})[:20]
    output.write_text("\n".join(lines) + "\n" + partial)  # killed while writing a row
    argv = ["predict", "--model", small_model[0], str(MUSIC), "-o", str(output), "--top", "0"]
    assert main(argv) == 1
    assert f"{len(done)} tracks already tagged" in capsys.readouterr().err
    rows = tagger.read_results(str(output))
    paths = [os.path.abspath(r["path"]) for r in rows]
    assert sorted(paths) == sorted(os.path.abspath(p) for p in GOOD)  # each once
    by_path = dict(zip(paths, rows))
    for path in done:  # not tagged again
        assert by_path[os.path.abspath(path)]["windows"] == 7
    np.testing.assert_allclose(by_path[os.path.abspath(GOOD[2])]["scores"],
                               expected_scores[GOOD[2]][0], atol=TOLERANCE)
    # A second run has nothing left to tag but the broken file.
    assert main(argv) == 1
    assert len(tagger.read_results(str(output))) == len(GOOD)


def test_tag_tracks_in_order_with_few_tracks_in_flight(small_model, expected_scores):
    runner = tagger.load_runner(small_model[0])
    paths = [GOOD[0], BROKEN, *GOOD[1:4]]
    results = list(tagger.tag_tracks(runner, paths, batch_size=2, workers=2, in_flight=2,
                                     window_scores=True))
    assert [r.path for r in results] == paths
    assert not results[1].ok and "broken.ogg" in results[1].error
    for result in results[:1] + results[2:]:
        np.testing.assert_allclose(result.window_scores, expected_scores[result.path][3],
                                   atol=TOLERANCE)


# --- models and errors ----------------------------------------------------------------------


def test_a_corrupt_keras_model_is_named(small_model, tmp_path, capsys):
    corrupt = tmp_path / "cut.keras"
    corrupt.write_bytes(Path(small_model[0]).read_bytes()[:5000])
    assert main(["predict", "--model", str(corrupt), GOOD[0]]) == 2
    error = capsys.readouterr().err
    assert "corrupt" in error and str(corrupt) in error and "File not found" not in error
    from tfmood.models.vggish import load_model

    with pytest.raises(ValueError, match="corrupt"):
        load_model(str(corrupt))


def test_the_default_model_is_the_shipped_one(monkeypatch, tmp_path, capsys):
    assert tagger.DEFAULT_MODEL.parent.name == "saved_models"
    assert tagger.DEFAULT_MODEL.parent.parent == Path(tagger.__file__).resolve().parents[1]
    missing = tmp_path / "saved_models" / "mtg-jamendo-baseline.keras"
    monkeypatch.setattr(tagger, "DEFAULT_MODEL", missing)
    assert main(["predict", GOOD[0]]) == 2
    error = capsys.readouterr().err
    assert str(missing) in error and "--model" in error


def test_an_unknown_output_format_is_refused(small_model, tmp_path, capsys):
    assert main(["predict", "--model", small_model[0], GOOD[0], "-o",
                 str(tmp_path / "tags.txt")]) == 2
    assert "tags.txt" in capsys.readouterr().err
