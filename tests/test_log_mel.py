"""LogMel against essentia's MTG-Jamendo melspecs, a numpy/librosa computation, and TFLite."""

import math
import os

import keras
import librosa
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf
from layer_checks import run_layer_checks

from tfmood.deploy.runtime import op_details
from tfmood.deploy.runtime import run as run_tflite
from tfmood.layers.log_mel import LogMel

NEAR_PEAK_DB = 80.0


def numpy_log_mel(
    waveform, sample_rate=12000, n_fft=512, hop_length=256, n_mels=96, f_min=0.0, f_max=None
):
    """The front-end written out in float64: essentia framing, numpy FFT, librosa filterbank."""
    waveform = np.asarray(waveform, dtype=np.float64)
    n_frames = math.ceil(waveform.size / hop_length) + 1
    padded = np.zeros((n_frames - 1) * hop_length + n_fft)
    padded[n_fft // 2 : n_fft // 2 + waveform.size] = waveform
    frames = np.stack([padded[k * hop_length : k * hop_length + n_fft] for k in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)) ** 2
    filters = librosa.filters.mel(
        sr=sample_rate,
        n_fft=n_fft,
        n_mels=n_mels,
        fmin=f_min,
        fmax=f_max,
        htk=False,
        norm="slaney",
        dtype=np.float64,
    )
    return 20.0 * np.log10(np.maximum(power @ filters.T, 1e-10)).T


def max_differences(actual, expected):
    """Largest |difference| where `expected` is within 80 dB of its peak, and elsewhere."""
    difference = np.abs(np.asarray(actual, np.float64) - expected)
    near = expected >= expected.max() - NEAR_PEAK_DB
    far = difference[~near].max() if (~near).any() else 0.0
    return difference[near].max(), far


def log_mel_of(layer, waveform):
    return np.asarray(layer(np.asarray(waveform, np.float32)[None, :]))[0]


def test_matches_essentia_melspecs(reference_dir):
    clips = sorted((reference_dir / "mel").glob("*.wav"))
    assert clips, f"no .wav clips in {reference_dir / 'mel'}"
    layer = LogMel()
    for clip in clips:
        waveform, rate = sf.read(clip, dtype="float32")
        assert rate == 12000 and waveform.ndim == 1
        expected = np.load(clip.with_suffix(".essentia_mel.npy"), allow_pickle=False)
        actual = log_mel_of(layer, waveform)
        assert actual.shape == expected.shape, clip.name
        assert actual.dtype == np.float32
        near, far = max_differences(actual, expected)
        assert near <= 0.05, f"{clip.name}: {near:.4f} dB within 80 dB of the peak"
        assert far <= 0.5, f"{clip.name}: {far:.4f} dB more than 80 dB below the peak"


@pytest.mark.parametrize("n_samples", [1, 100, 511, 512, 513, 12000])
def test_matches_numpy_reference(n_samples):
    waveform = np.random.default_rng(n_samples).normal(scale=0.1, size=n_samples)
    actual = log_mel_of(LogMel(), waveform)
    expected = numpy_log_mel(waveform)
    assert actual.shape == (96, math.ceil(n_samples / 256) + 1)
    near, far = max_differences(actual, expected)
    assert near <= 1e-3 and far <= 0.5, (near, far)


def test_matches_numpy_reference_with_other_parameters():
    # A hop that does not divide the frame, an odd frame length and a band-limited filterbank.
    params = {
        "sample_rate": 16000,
        "n_fft": 401,
        "hop_length": 160,
        "n_mels": 40,
        "f_min": 50.0,
        "f_max": 7000.0,
    }
    waveform = np.random.default_rng(1).normal(scale=0.1, size=5000)
    actual = log_mel_of(LogMel(**params), waveform)
    expected = numpy_log_mel(waveform, **params)
    assert actual.shape == expected.shape == (40, 33)
    near, far = max_differences(actual, expected)
    assert near <= 1e-3 and far <= 0.5, (near, far)


def test_silence_is_the_floor():
    assert np.all(log_mel_of(LogMel(), np.zeros(1000)) == -200.0)


def test_a_tone_lands_in_its_mel_band():
    rate = 12000
    tone = np.sin(2 * np.pi * 1500.0 * np.arange(rate) / rate)
    mel = log_mel_of(LogMel(), tone)
    centres = librosa.mel_frequencies(n_mels=98, fmin=0.0, fmax=6000.0, htk=False)[1:-1]
    loudest = np.argmax(mel[:, 10])
    assert abs(centres[loudest] - 1500.0) < 60.0


@pytest.mark.parametrize("n_samples", [0, 1, 255, 256, 257, 28440, 360000])
def test_frame_count_follows_essentia(n_samples):
    layer = LogMel()
    expected = math.ceil(n_samples / 256) + 1
    assert layer.compute_output_shape((3, n_samples)) == (3, 96, expected)
    assert layer.n_frames(n_samples) == expected


def test_symbolic_length():
    inputs = keras.Input(shape=(None,))
    assert tuple(LogMel(n_mels=64)(inputs).shape) == (None, 64, None)


def test_layer_checks(tmp_path):
    # No weights: the shared checks still cover config, shapes and .keras save/load.
    with pytest.warns(UserWarning, match="trainable weights"):
        run_layer_checks(LogMel, {"n_mels": 32, "f_max": 5000.0}, (1000,), (32, 5), 0, tmp_path, 0)


def test_config_round_trip():
    layer = LogMel(sample_rate=16000, n_fft=1024, hop_length=320, n_mels=64, f_min=20.0)
    config = layer.get_config()
    assert config["f_max"] == 8000.0 and config["hop_length"] == 320
    clone = LogMel.from_config(config)
    assert clone.get_config() == config
    waveform = np.random.default_rng(0).normal(size=3000)
    np.testing.assert_array_equal(log_mel_of(clone, waveform), log_mel_of(layer, waveform))


def test_saved_model_gives_identical_outputs(tmp_path):
    inputs = keras.Input(shape=(6000,))
    features = LogMel()(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(features))
    model = keras.Model(inputs, outputs)
    path = os.path.join(tmp_path, "front_end.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded.layers[1], LogMel)
    x = np.random.default_rng(2).normal(scale=0.1, size=(2, 6000)).astype("float32")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_converts_to_builtin_tflite_ops():
    inputs = keras.Input(shape=(12000,), batch_size=1)
    model = keras.Model(inputs, LogMel()(inputs))
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    flatbuffer = converter.convert()
    op_names = {op["op_name"] for op in op_details(flatbuffer)}
    assert "CONV_2D" in op_names
    assert not any(name.startswith("Flex") or name == "CUSTOM" for name in op_names), op_names

    waveform = np.random.default_rng(3).normal(scale=0.1, size=(1, 12000)).astype("float32")
    actual = run_tflite(flatbuffer, waveform)[0]
    expected = numpy_log_mel(waveform[0])
    near, _ = max_differences(actual, expected)
    assert near <= 1e-3, near
    keras_output = model.predict(waveform, verbose=0)[0]
    assert max_differences(actual, keras_output)[0] <= 1e-3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_fft": 0}, "n_fft"),
        ({"hop_length": 2.5}, "hop_length"),
        ({"f_max": 7000.0}, "f_max"),
        ({"f_min": 3000.0, "f_max": 2000.0}, "f_min"),
        ({"amin": 0.0}, "amin"),
    ],
)
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LogMel(**kwargs)


def test_rejects_input_that_is_not_a_batch_of_waveforms():
    with pytest.raises(ValueError):
        LogMel()(np.zeros((1, 100, 1), "float32"))
