"""Decoding (tensorflow-io) against libsndfile, and the resampler against libsamplerate's loop."""

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from tfmood.audio import (
    decode_audio,
    downmix_to_mono,
    load_audio,
    load_audio_tensor,
    resample_linear,
)

RATE = 44100


def stereo_signal(n_samples=4410, rate=RATE):
    """Two different channels: a 440 Hz tone and quieter noise."""
    t = np.arange(n_samples) / rate
    noise = np.random.default_rng(0).uniform(-0.2, 0.2, n_samples)
    return np.stack([0.5 * np.sin(2 * np.pi * 440.0 * t), noise], axis=1)


def write_fixture(path, samples, rate=RATE, **kwargs):
    """Write with soundfile, or skip when this libsndfile build cannot encode the format."""
    file_format = kwargs.get("format")
    if file_format and file_format not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {file_format} here")
    try:
        sf.write(path, samples, rate, **kwargs)
    except (sf.LibsndfileError, ValueError) as error:
        pytest.skip(f"libsndfile cannot write {path.name} here: {error}")
    return path


def src_linear_reference(samples, rate_in, rate_out):
    """libsamplerate's SRC_LINEAR loop written out step by step, as one src_process call.

    The ratio is a float32, as essentia's Resample passes it; the converter starts with the
    first sample as its held value and interpolates in double precision.
    """
    x = np.asarray(samples, dtype=np.float64)
    step = 1.0 / float(np.float32(rate_out) / np.float32(rate_in))

    def fmod_one(value):
        remainder = value - round(value)
        return remainder + 1.0 if remainder < 0.0 else remainder

    out, held, index = [], x[0], 0.0
    while index < 1.0:
        out.append(held + index * (x[0] - held))
        index += step
    remainder = fmod_one(index)
    used, index = round(index - remainder), remainder
    while used + index < x.size:
        out.append(x[used - 1] + index * (x[used] - x[used - 1]))
        index += step
        remainder = fmod_one(index)
        used, index = used + round(index - remainder), remainder
    return np.asarray(out, dtype=np.float32)


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


@pytest.mark.parametrize("name", sorted(LOSSLESS) + sorted(LOSSY))
def test_decode_matches_libsndfile(tmp_path, name):
    options = dict(LOSSLESS.get(name) or LOSSY[name])
    path = write_fixture(tmp_path / f"clip{options.pop('suffix')}", stereo_signal(), **options)
    samples, rate = decode_audio(path)
    expected, expected_rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == expected_rate == RATE
    assert samples.dtype == np.float32 and samples.shape == expected.shape
    # Lossless formats decode to the same numbers; MP3 and Vorbis through other decoders.
    tolerance = 0.0 if name in LOSSLESS else 1e-4
    np.testing.assert_allclose(samples, expected, rtol=0, atol=tolerance)


def test_downmix_is_the_channel_mean():
    samples = stereo_signal().astype(np.float32)
    np.testing.assert_allclose(downmix_to_mono(samples), (samples[:, 0] + samples[:, 1]) / 2)
    np.testing.assert_array_equal(downmix_to_mono(samples[:, :1]), samples[:, 0])
    np.testing.assert_array_equal(downmix_to_mono(samples[:, 0]), samples[:, 0])


@pytest.mark.parametrize(
    "rate_in, n_samples",
    [
        (44100, 4410),
        (44100, 4423),
        (48000, 1001),
        (22050, 2205),
        (16000, 4000),
        (32000, 777),
        (8000, 1001),
        (11025, 500),
    ],
)
def test_resample_linear_matches_libsamplerate_loop(rate_in, n_samples):
    samples = np.random.default_rng(n_samples).normal(scale=0.3, size=n_samples)
    expected = src_linear_reference(samples, rate_in, 12000)
    actual = resample_linear(samples, rate_in, 12000)
    assert actual.dtype == np.float32
    assert actual.shape == expected.shape
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-6)


def test_resample_keeps_a_tone_below_the_new_nyquist():
    rate_in = 44100
    tone = np.sin(2 * np.pi * 1000.0 * np.arange(rate_in) / rate_in)
    resampled = resample_linear(tone, rate_in, 12000)
    # One sample more than 12000: essentia's float32 ratio is a hair above 12000 / 44100.
    assert resampled.size == 12001
    spectrum = np.abs(np.fft.rfft(resampled * np.hanning(resampled.size)))
    peak_hz = np.fft.rfftfreq(resampled.size, 1 / 12000)[np.argmax(spectrum)]
    assert peak_hz == pytest.approx(1000.0, abs=1.0)


def test_resample_edge_cases():
    samples = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(resample_linear(samples, 12000, 12000), samples)
    assert resample_linear(np.zeros(0), 44100, 12000).size == 0
    with pytest.raises(ValueError, match="positive"):
        resample_linear(samples, 0, 12000)


def test_load_audio_is_decode_downmix_resample(tmp_path):
    path = write_fixture(tmp_path / "stereo.wav", stereo_signal(), subtype="FLOAT")
    stereo, _ = sf.read(path, dtype="float32")
    expected = src_linear_reference((stereo[:, 0] + stereo[:, 1]) / 2, RATE, 12000)
    waveform = load_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    np.testing.assert_allclose(waveform, expected, rtol=0, atol=1e-6)
    assert load_audio(str(path), sample_rate=RATE).size == stereo.shape[0]


def test_load_audio_tensor_in_a_dataset(tmp_path):
    paths = []
    for index, n_samples in enumerate([4410, 2000]):
        path = tmp_path / f"clip{index}.wav"
        paths.append(str(write_fixture(path, stereo_signal(n_samples), subtype="PCM_16")))
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(load_audio_tensor)
    assert dataset.element_spec.shape.as_list() == [None]
    for path, waveform in zip(paths, dataset):
        np.testing.assert_array_equal(waveform.numpy(), load_audio(path))


def test_missing_file(tmp_path):
    path = tmp_path / "absent.mp3"
    with pytest.raises(FileNotFoundError, match="absent.mp3: no such audio file"):
        load_audio(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.flac"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.flac: the file is empty"):
        load_audio(path)


@pytest.mark.parametrize("name", ["noise.mp3", "notes.wav", "noise.ogg"])
def test_unrecognised_content(tmp_path, name):
    path = tmp_path / name
    if name == "notes.wav":
        path.write_text("not audio\n" * 50)
    else:
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    with pytest.raises(ValueError, match=f"{name}: unsupported or unrecognised audio format"):
        load_audio(path)


def test_unsupported_container(tmp_path):
    path = write_fixture(tmp_path / "clip.aiff", stereo_signal(), format="AIFF")
    with pytest.raises(ValueError, match="clip.aiff: unsupported"):
        load_audio(path)


def test_unsupported_encoding(tmp_path):
    path = write_fixture(tmp_path / "double.wav", stereo_signal(), subtype="DOUBLE")
    with pytest.raises(ValueError, match="double.wav: unsupported audio encoding"):
        load_audio(path)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_truncated_file(tmp_path, suffix):
    path = write_fixture(tmp_path / f"whole{suffix}", stereo_signal(), subtype="PCM_16")
    truncated = tmp_path / f"cut{suffix}"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ValueError, match=f"cut{suffix}: corrupt or truncated"):
        load_audio(truncated)


def test_zero_length_audio(tmp_path):
    path = write_fixture(tmp_path / "silent.wav", np.zeros((0, 2)), subtype="PCM_16")
    with pytest.raises(ValueError, match="silent.wav: the file holds no audio samples"):
        load_audio(path)
