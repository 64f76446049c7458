"""Audio file -> (96, T) log-mel, the library function and `tfmood features`."""

import math

import librosa
import numpy as np
import pytest
import soundfile as sf

from tfmood.cli import main
from tfmood.data.features import audio_file_to_mel, waveform_to_mel, write_mel


def reference_log_mel(waveform):
    """12 kHz waveform -> dB mel in float64: essentia framing, numpy FFT, librosa filterbank."""
    waveform = np.asarray(waveform, dtype=np.float64)
    n_frames = math.ceil(waveform.size / 256) + 1
    padded = np.zeros((n_frames - 1) * 256 + 512)
    padded[256 : 256 + waveform.size] = waveform
    frames = np.stack([padded[k * 256 : k * 256 + 512] for k in range(n_frames)])
    power = np.abs(np.fft.rfft(frames * np.hanning(512), axis=1)) ** 2
    filters = librosa.filters.mel(sr=12000, n_fft=512, n_mels=96, fmin=0, fmax=6000, norm="slaney")
    return 20.0 * np.log10(np.maximum(power @ filters.T.astype(np.float64), 1e-10)).T


def assert_close_in_db(actual, expected, near_tolerance):
    near = expected >= expected.max() - 80.0
    difference = np.abs(actual - expected)
    assert difference[near].max() <= near_tolerance, difference[near].max()
    assert difference.max() <= 0.5, difference.max()


def test_reference_clips_give_the_essentia_melspecs(reference_dir):
    for clip in sorted((reference_dir / "mel").glob("*.wav")):
        expected = np.load(clip.with_suffix(".essentia_mel.npy"), allow_pickle=False)
        mel = audio_file_to_mel(clip)
        assert mel.shape == expected.shape and mel.dtype == np.float32, clip.name
        assert_close_in_db(mel, expected, 0.05)


def test_a_44k_stereo_file(tmp_path):
    rate, n_samples = 44100, 44100
    t = np.arange(n_samples) / rate
    noise = np.random.default_rng(0).normal(scale=0.05, size=n_samples)
    stereo = np.stack([0.4 * np.sin(2 * np.pi * 880.0 * t), noise], axis=1)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, rate, subtype="FLOAT")

    mono = stereo.astype(np.float32).mean(axis=1)
    # Linear interpolation at libsamplerate's read positions (see tfmood.data.audio.resample_linear).
    step = 1.0 / float(np.float32(12000) / np.float32(rate))
    positions = np.arange(math.ceil(n_samples / step)) * step - 1.0
    resampled = np.interp(positions, np.arange(n_samples), mono)

    mel = audio_file_to_mel(path)
    assert mel.shape == (96, math.ceil(resampled.size / 256) + 1)
    assert_close_in_db(mel, reference_log_mel(resampled), 1e-3)


def test_waveform_to_mel_checks_its_input():
    assert waveform_to_mel(np.zeros(100)).shape == (96, 2)
    with pytest.raises(ValueError, match="mono"):
        waveform_to_mel(np.zeros((2, 100)))


def test_write_mel_replaces_only_on_success(tmp_path):
    output = tmp_path / "mel.npy"
    np.save(output, np.ones(3))
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    with pytest.raises(ValueError, match="bad.wav"):
        write_mel(bad, output)
    np.testing.assert_array_equal(np.load(output), np.ones(3))

    good = tmp_path / "good.wav"
    sf.write(good, np.random.default_rng(1).normal(scale=0.1, size=3000), 12000)
    written = write_mel(good, output)
    np.testing.assert_array_equal(np.load(output, allow_pickle=False), written)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.wav", "good.wav", "mel.npy"]


def test_cli_writes_a_float32_npy(tmp_path, capsys):
    audio = tmp_path / "clip.flac"
    sf.write(audio, np.random.default_rng(2).normal(scale=0.1, size=(20000, 2)), 22050)
    output = tmp_path / "clip.npy"
    assert main(["features", str(audio), "-o", str(output)]) == 0
    mel = np.load(output, allow_pickle=False)
    assert mel.dtype == np.float32 and mel.shape == (96, math.ceil(20000 * 12000 / 22050 / 256) + 1)
    np.testing.assert_array_equal(mel, audio_file_to_mel(audio))
    assert "96 mel bands" in capsys.readouterr().out


def test_cli_reports_bad_input(tmp_path, capsys):
    output = tmp_path / "out.npy"
    assert main(["features", str(tmp_path / "absent.wav"), "-o", str(output)]) == 2
    assert "absent.wav: no such audio file" in capsys.readouterr().err
    assert not output.exists()
    audio = tmp_path / "clip.wav"
    sf.write(audio, np.zeros(100), 12000)
    assert main(["features", str(audio), "-o", str(tmp_path / "no_dir" / "out.npy")]) == 2
    assert "output directory does not exist" in capsys.readouterr().err
