"""tensorflow-io decoding (tfmood.data.audio_tfio) against libsndfile; skipped where it cannot load."""

import concurrent.futures
import sys

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from tfmood.data import audio_tfio

try:
    audio_tfio.require_tfio()
except ImportError as error:
    pytest.skip(
        f"tensorflow-io cannot load with TensorFlow {tf.__version__} on Python "
        f"{sys.version_info.major}.{sys.version_info.minor}: {error}",
        allow_module_level=True,
    )

from test_audio import RATE, stereo_signal, write_fixture

from tfmood.data.audio import load_audio
from tfmood.data.audio_tfio import (
    decode_audio_tfio,
    load_audio_tensor_tfio,
    load_audio_tfio,
)

LOSSLESS = {
    "wav-pcm16": {"suffix": ".wav", "subtype": "PCM_16"},
    "wav-pcm24": {"suffix": ".wav", "subtype": "PCM_24"},
    "wav-pcm32": {"suffix": ".wav", "subtype": "PCM_32"},
    "wav-pcm8": {"suffix": ".wav", "subtype": "PCM_U8"},
    "wav-float": {"suffix": ".wav", "subtype": "FLOAT"},
    "wavex-pcm32": {"suffix": ".wav", "subtype": "PCM_32", "format": "WAVEX"},
    "flac-pcm16": {"suffix": ".flac", "subtype": "PCM_16"},
}
LOSSY = {
    "mp3": {"suffix": ".mp3", "format": "MP3", "subtype": "MPEG_LAYER_III"},
    "ogg-vorbis": {"suffix": ".ogg", "format": "OGG", "subtype": "VORBIS"},
}


def write_named(tmp_path, name, samples, stem="clip"):
    options = dict(LOSSLESS.get(name) or LOSSY[name])
    return write_fixture(tmp_path / f"{stem}{options.pop('suffix')}", samples, **options)


@pytest.mark.parametrize("name", sorted(LOSSLESS) + sorted(LOSSY))
def test_decode_matches_libsndfile(tmp_path, name):
    path = write_named(tmp_path, name, stereo_signal())
    samples, rate = decode_audio_tfio(path)
    expected, expected_rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == expected_rate == RATE
    assert samples.dtype == np.float32 and samples.shape == expected.shape
    # Lossless formats decode to the same numbers; MP3 and Vorbis through other decoders.
    tolerance = 0.0 if name in LOSSLESS else 1e-4
    np.testing.assert_allclose(samples, expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize("name", ["wav-pcm16", "wav-pcm32", "flac-pcm16", "mp3", "ogg-vorbis"])
def test_max_seconds_decodes_the_start(tmp_path, name):
    path = write_named(tmp_path, name, stereo_signal(RATE))
    whole, _ = decode_audio_tfio(path)
    start, _ = decode_audio_tfio(path, max_seconds=0.25)
    assert start.shape == (round(0.25 * RATE), 2)
    np.testing.assert_array_equal(start, whole[: start.shape[0]])


def test_load_audio_tfio_matches_libsndfile_for_lossless_files(tmp_path):
    path = write_named(tmp_path, "wav-pcm16", stereo_signal())
    np.testing.assert_array_equal(load_audio_tfio(path), load_audio(path))
    paths = [str(path), str(write_named(tmp_path, "flac-pcm16", stereo_signal(2000), "b"))]
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(load_audio_tensor_tfio)
    assert dataset.element_spec.shape.as_list() == [None]
    for name, waveform in zip(paths, dataset):
        np.testing.assert_array_equal(waveform.numpy(), load_audio(name))


def test_decodes_serialised_in_parallel_threads(tmp_path):
    names = ["mp3", "ogg-vorbis", "wav-pcm16", "flac-pcm16"] * 2
    paths = [
        write_named(tmp_path, name, stereo_signal(8000 + 997 * i, seed=i), f"clip{i}")
        for i, name in enumerate(names)
    ]
    expected = {path: decode_audio_tfio(path)[0] for path in paths}
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda path: decode_audio_tfio(path)[0], paths * 3))
    for path, samples in zip(paths * 3, results):
        np.testing.assert_array_equal(samples, expected[path], err_msg=path.name)


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.mp3: no such audio file"):
        decode_audio_tfio(tmp_path / "absent.mp3")
    empty = tmp_path / "empty.flac"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.flac: the file is empty"):
        decode_audio_tfio(empty)
    notes = tmp_path / "notes.wav"
    notes.write_text("not audio\n" * 50)
    with pytest.raises(ValueError, match="notes.wav: unsupported or unrecognised audio format"):
        decode_audio_tfio(notes)
    whole = write_fixture(tmp_path / "whole.wav", stereo_signal(), subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 3])
    with pytest.raises(ValueError, match="cut.wav: corrupt or truncated"):
        decode_audio_tfio(cut)
    silent = write_fixture(tmp_path / "silent.wav", np.zeros((0, 2)), subtype="PCM_16")
    with pytest.raises(ValueError, match="silent.wav: the file holds no audio samples"):
        decode_audio_tfio(silent)
    double = write_fixture(tmp_path / "double.wav", stereo_signal(), subtype="DOUBLE")
    with pytest.raises(ValueError, match="double.wav: unsupported audio encoding"):
        decode_audio_tfio(double)
