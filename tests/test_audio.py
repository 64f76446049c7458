"""Decoding (libsndfile) against independent readers, and the resampler against libsamplerate."""

import concurrent.futures
import importlib.abc
import re
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

import tfmood
from tfmood.data.audio import (
    decode_audio,
    downmix_to_mono,
    load_audio,
    load_audio_tensor,
    resample_linear,
)

RATE = 44100
INT16_MAX = 32767 / 32768


def stereo_signal(n_samples=4410, rate=RATE, frequency=440.0, seed=0):
    """Two different channels: a tone and quieter noise."""
    t = np.arange(n_samples) / rate
    noise = np.random.default_rng(seed).uniform(-0.2, 0.2, n_samples)
    return np.stack([0.5 * np.sin(2 * np.pi * frequency * t), noise], axis=1)


def write_fixture(path, samples, rate=RATE, **kwargs):
    """Write with soundfile, or skip when this libsndfile build cannot encode the format."""
    file_format = kwargs.get("format")
    if file_format and file_format not in sf.available_formats():
        pytest.skip(f"libsndfile {sf.__libsndfile_version__} cannot write {file_format} here")
    try:
        sf.write(path, samples, rate, **kwargs)
    except (sf.LibsndfileError, ValueError, TypeError) as error:  # TypeError: older soundfile
        pytest.skip(f"libsndfile cannot write {path.name} here: {error}")
    return path


def read_pcm_wav(path):
    """A PCM WAV file as integers, read with Python's own `wave` module (not libsndfile)."""
    with wave.open(str(path)) as handle:
        width, channels = handle.getsampwidth(), handle.getnchannels()
        data = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.uint8)
    if width == 1:
        return data.reshape(-1, channels).astype(np.int64) - 128  # unsigned, zero at 128
    # Little-endian two's complement of `width` bytes, sign-extended through the top byte.
    data = data.reshape(-1, width).astype(np.int64)
    values = sum(data[:, i] << (8 * i) for i in range(width))
    values -= (values >= 1 << (8 * width - 1)) * (1 << (8 * width))
    return values.reshape(-1, channels)


def strip_first_mp3_frame(data):
    """An MPEG-1 Layer III stream without its first frame (where LAME writes the Info tag)."""
    bitrates_kbps = [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320]
    rates = [44100, 48000, 32000]
    assert data[0] == 0xFF and data[1] & 0xFE == 0xFA, "not an MPEG-1 Layer III frame"
    bitrate = bitrates_kbps[data[2] >> 4] * 1000
    length = 144 * bitrate // rates[(data[2] >> 2) & 3] + ((data[2] >> 1) & 1)
    assert any(tag in data[:length] for tag in (b"Xing", b"Info")), "no length tag to strip"
    return data[length:]


def id3v2_tag(title=b"tfmood"):
    """A minimal ID3v2.3 tag with a title frame, as many MP3 files start with."""
    frame = b"TIT2" + (len(title) + 1).to_bytes(4, "big") + b"\0\0" + b"\0" + title
    size = bytes((len(frame) >> shift) & 0x7F for shift in (21, 14, 7, 0))  # 7 bits a byte
    return b"ID3\x03\x00\x00" + size + frame


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


PCM_WAV_BITS = {"PCM_U8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
FORMATS = {
    "wav": {"suffix": ".wav", "subtype": "PCM_16"},
    "flac": {"suffix": ".flac", "subtype": "PCM_16"},
    "mp3": {"suffix": ".mp3", "format": "MP3", "subtype": "MPEG_LAYER_III"},
    "ogg": {"suffix": ".ogg", "format": "OGG", "subtype": "VORBIS"},
}


def write_format(tmp_path, name, samples, stem="clip", rate=RATE):
    options = dict(FORMATS[name])
    return write_fixture(tmp_path / f"{stem}{options.pop('suffix')}", samples, rate, **options)


@pytest.mark.parametrize("subtype", sorted(PCM_WAV_BITS))
def test_pcm_wav_is_scaled_by_its_full_scale(tmp_path, subtype):
    path = write_fixture(tmp_path / "clip.wav", stereo_signal(), subtype=subtype)
    samples, rate = decode_audio(path)
    expected = read_pcm_wav(path) / 2.0 ** (PCM_WAV_BITS[subtype] - 1)
    assert rate == RATE
    assert samples.dtype == np.float32 and samples.shape == expected.shape == (4410, 2)
    np.testing.assert_array_equal(samples, expected.astype(np.float32))


def test_float_wav_is_decoded_as_stored(tmp_path):
    signal = stereo_signal() * 3.0  # float WAV may exceed full scale; essentia keeps it
    path = write_fixture(tmp_path / "clip.wav", signal, subtype="FLOAT")
    samples, _ = decode_audio(path)
    np.testing.assert_array_equal(samples, signal.astype(np.float32))


@pytest.mark.parametrize(
    "lossless, subtype, bits",
    [
        ({"suffix": ".flac"}, "PCM_16", 16),
        ({"suffix": ".flac"}, "PCM_24", 24),
        ({"suffix": ".wav", "format": "WAVEX"}, "PCM_32", 32),
    ],
)
def test_lossless_formats_give_back_their_integers(tmp_path, lossless, subtype, bits):
    # Integers in, so the file holds exactly these values (a float write would round them).
    integers = np.round(stereo_signal() * (2 ** (bits - 1) - 1)).astype(np.int64)
    # 24-bit samples are handed to libsndfile in the top bits of an int32.
    if bits == 16:
        stored = integers.astype(np.int16)
    else:
        stored = (integers << (32 - bits)).astype(np.int32)
    options = dict(lossless)
    path = write_fixture(
        tmp_path / f"clip{options.pop('suffix')}", stored, subtype=subtype, **options
    )
    samples, rate = decode_audio(path)
    assert rate == RATE
    np.testing.assert_array_equal(samples, (integers / 2.0 ** (bits - 1)).astype(np.float32))


@pytest.mark.parametrize("name", ["mp3", "ogg"])
def test_lossy_formats_keep_length_and_signal(tmp_path, name):
    signal = stereo_signal(22050)
    samples, rate = decode_audio(write_format(tmp_path, name, signal))
    # The encoder delay and padding are trimmed (LAME header, Ogg granule positions), so the
    # decoded length is the original one, sample-aligned with it.
    assert rate == RATE and samples.dtype == np.float32 and samples.shape == signal.shape
    tone = signal[:, 0]
    error = samples[:, 0] - tone
    assert np.sqrt(np.mean(error**2)) < 0.05 * np.sqrt(np.mean(tone**2))


def test_mp3_is_rounded_to_16_bits_and_clipped_like_essentia(tmp_path):
    signal = np.clip(1.3 * stereo_signal(22050) / 0.5, -1.0, 1.0)  # a clipped, loud master
    path = write_format(tmp_path, "mp3", signal)
    raw, _ = sf.read(path, dtype="float32", always_2d=True)
    assert np.abs(raw).max() > 1.0, "libmpg123 should overshoot full scale on this clip"
    samples, _ = decode_audio(path)
    assert samples.max() == INT16_MAX and samples.min() == -1.0
    scaled = samples.astype(np.float64) * 32768
    np.testing.assert_array_equal(scaled, np.round(scaled))
    inside = np.abs(raw) < INT16_MAX
    np.testing.assert_allclose(samples[inside], raw[inside], rtol=0, atol=0.5 / 32768)


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_max_seconds_decodes_the_start(tmp_path, name):
    path = write_format(tmp_path, name, stereo_signal(RATE))
    whole, _ = decode_audio(path)
    start, rate = decode_audio(path, max_seconds=0.25)
    assert rate == RATE and start.shape == (round(0.25 * RATE), 2)
    np.testing.assert_array_equal(start, whole[: start.shape[0]])
    np.testing.assert_array_equal(decode_audio(path, max_seconds=30)[0], whole)
    # The resampled start is the start of the resampled whole, sample for sample.
    waveform = load_audio(path, max_seconds=0.25)
    assert waveform.size == resample_linear(start[:, 0], RATE, 12000).size
    np.testing.assert_array_equal(waveform, load_audio(path)[: waveform.size])


@pytest.mark.parametrize("max_seconds", [0, -1.0, float("nan"), float("inf")])
def test_max_seconds_must_be_a_positive_number(tmp_path, max_seconds):
    path = write_format(tmp_path, "wav", stereo_signal())
    with pytest.raises(ValueError, match="max_seconds must be a positive number"):
        decode_audio(path, max_seconds=max_seconds)
    assert decode_audio(path, max_seconds=1e-9)[0].shape == (1, 2)  # never zero samples


def test_decodes_in_parallel_threads(tmp_path):
    # Different signals and lengths per file, so a decode that returned another file's
    # samples would not match.
    paths = []
    for index, name in enumerate(sorted(FORMATS) * 2):
        signal = stereo_signal(RATE // 2 + 997 * index, frequency=220.0 * (index + 1), seed=index)
        paths.append(write_format(tmp_path, name, signal, stem=f"clip{index}"))
    expected = {path: decode_audio(path)[0] for path in paths}
    jobs = paths * 4
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda path: decode_audio(path)[0], jobs))
    for path, samples in zip(jobs, results):
        np.testing.assert_array_equal(samples, expected[path], err_msg=path.name)


@pytest.mark.parametrize("channels", range(2, 8))
def test_downmix_equals_numpys_channel_mean(channels):
    samples = np.random.default_rng(channels).standard_normal((10001, channels)).astype(np.float32)
    np.testing.assert_array_equal(downmix_to_mono(samples), samples.mean(axis=1, dtype=np.float32))


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


@pytest.mark.parametrize("parallel", [None, 4])
def test_load_audio_tensor_in_a_dataset(tmp_path, parallel):
    paths = []
    for index, n_samples in enumerate([4410, 2000, 3000, 5000]):
        path = tmp_path / f"clip{index}.wav"
        signal = stereo_signal(n_samples, seed=index)
        paths.append(str(write_fixture(path, signal, subtype="PCM_16")))
    ordered = None if parallel is None else True  # parallel calls, results in order
    dataset = tf.data.Dataset.from_tensor_slices(paths).map(
        load_audio_tensor, num_parallel_calls=parallel, deterministic=ordered
    )
    assert dataset.element_spec.shape.as_list() == [None]
    for path, waveform in zip(paths, dataset):
        np.testing.assert_array_equal(waveform.numpy(), load_audio(path))
    starts = tf.data.Dataset.from_tensor_slices(paths).map(
        lambda path: load_audio_tensor(path, max_seconds=0.05)
    )
    for path, waveform in zip(paths, starts):
        np.testing.assert_array_equal(waveform.numpy(), load_audio(path, max_seconds=0.05))


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
    # libsndfile reads AIFF, but tfmood accepts only the formats its front-end is tested on.
    path = write_fixture(tmp_path / "clip.aiff", stereo_signal(), format="AIFF")
    with pytest.raises(ValueError, match=r"clip.aiff: unsupported .*AIFF.*expected WAV"):
        load_audio(path)


def test_unsupported_encoding(tmp_path):
    path = write_fixture(tmp_path / "double.wav", stereo_signal(), subtype="DOUBLE")
    with pytest.raises(ValueError, match="double.wav: unsupported audio encoding .*64 bit float"):
        load_audio(path)


@pytest.mark.parametrize("suffix", [".wav", ".flac"])
def test_truncated_file(tmp_path, suffix):
    path = write_fixture(tmp_path / f"whole{suffix}", stereo_signal(), subtype="PCM_16")
    truncated = tmp_path / f"cut{suffix}"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    with pytest.raises(ValueError, match=f"cut{suffix}: corrupt or truncated"):
        load_audio(truncated)


def test_truncated_mp3_decodes_up_to_the_cut(tmp_path):
    # MP3 decoders, essentia's too, decode a cut stream up to where it ends.
    path = write_format(tmp_path, "mp3", stereo_signal(RATE), stem="whole")
    whole, _ = decode_audio(path)
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    start, _ = decode_audio(cut)
    assert 0.3 * whole.shape[0] < start.shape[0] < 0.7 * whole.shape[0]
    np.testing.assert_array_equal(start[:4410], whole[:4410])


def test_mp3_without_a_length_header(tmp_path):
    # libsndfile stops at libmpg123's length estimate, which for a VBR stream without a
    # Xing/Info header comes from the first frame's bitrate: here a fraction of the file.
    signal = stereo_signal(5 * RATE)
    path = write_fixture(tmp_path / "vbr.mp3", signal, format="MP3", bitrate_mode="VARIABLE")
    stream = strip_first_mp3_frame(path.read_bytes())
    for name, data in [("bare.mp3", stream), ("tagged.mp3", id3v2_tag() + stream)]:
        headerless = tmp_path / name
        headerless.write_bytes(data)
        assert sf.info(headerless).frames < 0.8 * signal.shape[0], "estimate not short here"
        with pytest.raises(ValueError, match=f"{name}: unsupported MP3 .*no Xing/Info/VBRI"):
            decode_audio(headerless)
        start, _ = decode_audio(headerless, max_seconds=0.5)  # inside the estimate: exact
        assert start.shape == (round(0.5 * RATE), 2)
    tagged = tmp_path / "tagged_with_header.mp3"
    tagged.write_bytes(id3v2_tag() + path.read_bytes())
    np.testing.assert_array_equal(decode_audio(tagged)[0], decode_audio(path)[0])


def test_zero_length_audio(tmp_path):
    path = write_fixture(tmp_path / "silent.wav", np.zeros((0, 2)), subtype="PCM_16")
    with pytest.raises(ValueError, match="silent.wav: the file holds no audio samples"):
        load_audio(path)


def test_only_audio_tfio_imports_tensorflow_io():
    package = Path(tfmood.__file__).parent
    importing = re.compile(r"^\s*(import|from)\s+tensorflow_io\b", re.MULTILINE)
    users = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if importing.search(path.read_text(encoding="utf-8"))
    )
    assert users == ["data/audio_tfio.py"]


def test_audio_tfio_says_how_to_install_tensorflow_io(tmp_path, monkeypatch):
    from tfmood.data import audio_tfio

    path = write_format(tmp_path, "wav", stereo_signal())
    monkeypatch.setitem(sys.modules, "tensorflow_io", None)  # as if it were not installed
    with pytest.raises(ImportError, match=re.escape("pip install tfmood[tfio]")):
        audio_tfio.decode_audio_tfio(path)


def test_audio_tfio_says_when_tensorflow_io_cannot_load(tmp_path, monkeypatch):
    from tfmood.data import audio_tfio

    class BrokenBuild(importlib.abc.MetaPathFinder):
        """A tensorflow-io built for another TensorFlow: its kernels fail to load."""

        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow_io":
                raise tf.errors.NotFoundError(None, None, "undefined symbol: _ZN10tensorflow")

    monkeypatch.delitem(sys.modules, "tensorflow_io", raising=False)
    monkeypatch.setattr(sys, "meta_path", [BrokenBuild(), *sys.meta_path])
    expected = rf"cannot load with TensorFlow {re.escape(tf.__version__)} .*NotFoundError"
    with pytest.raises(ImportError, match=expected):
        audio_tfio.load_audio_tfio(write_format(tmp_path, "wav", stereo_signal()))


class _FakeHandle:
    """What `tfmood.data.audio._read` sees of a libsndfile handle."""

    def __init__(self, file_format, frames, decoded):
        self.format, self.frames, self.decoded = file_format, frames, decoded

    def read(self, limit, dtype, always_2d):
        return np.zeros((self.decoded, 2), dtype)


@pytest.mark.parametrize("shortfall, ok", [(0, True), (104, True), (8192, True), (8193, False)])
def test_ogg_may_decode_up_to_one_vorbis_block_short_of_its_announced_length(shortfall, ok):
    # libsndfile announces an Ogg Vorbis stream's length from its last granule position, which
    # can exceed what the last block decodes to (three HyperRogue tracks: 104 samples short).
    from tfmood.data.audio import _read

    handle = _FakeHandle("OGG", 100_000, 100_000 - shortfall)
    if ok:
        assert _read(handle, -1, "x.ogg").shape == (100_000 - shortfall, 2)
    else:
        with pytest.raises(ValueError, match="x.ogg: corrupt or truncated"):
            _read(handle, -1, "x.ogg")
    with pytest.raises(ValueError, match="x.wav: corrupt or truncated"):
        _read(_FakeHandle("WAV", 100_000, 99_896), -1, "x.wav")


@pytest.mark.parametrize("rate_in", [8000, 11025, 16000, 22050, 44100, 48000])
def test_blockwise_resampling_equals_one_interpolation(monkeypatch, rate_in):
    # The whole signal interpolated at once at the converter's read positions, against the
    # block-wise form with many blocks and blocks ending at every kind of edge.
    import tfmood.data.audio

    monkeypatch.setattr(tfmood.data.audio, "_RESAMPLE_BLOCK", 1000)
    rng = np.random.default_rng(rate_in)
    for n in (1, 2, 7, 999, 1000, 12345, 100003):
        samples = rng.standard_normal(n).astype(np.float32)
        got = resample_linear(samples, rate_in, 12000)
        step = 1.0 / float(np.float32(12000) / np.float32(rate_in))
        positions = np.arange(got.size, dtype=np.float64) * step - 1.0
        expected = np.interp(positions, np.arange(n, dtype=np.float64), samples)
        assert got.dtype == np.float32
        np.testing.assert_array_equal(got, expected.astype(np.float32))
