"""tf.data pipelines from melspec .npy files, audio files and TFRecord shards."""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tfmood.cli import main as cli_main
from tfmood.data import npy_files, shards
from tfmood.data.metadata import read_split
from tfmood.data.pipeline import DataConfig, make_dataset
from tfmood.data.shards import write_shards
from tfmood.data.tags import MOODTHEME_TAGS
from tfmood.data.validation import validate_files

HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"
QUIET = {"progress": False, "io_threads": 2}


def ramp_mel(track: int, frames: int) -> np.ndarray:
    """Every cell tells where it comes from: value = frame + 2000 * band + 200000 * track."""
    bands = np.arange(96, dtype=np.float32)[:, None]
    steps = np.arange(frames, dtype=np.float32)[None, :]
    return steps + 2000.0 * bands + 200000.0 * track


def write_split(tmp_path: Path, rows, name="split.tsv") -> str:
    """rows: (track_number, audio_extension, tag names); returns the TSV path."""
    lines = [HEADER]
    for number, extension, tags in rows:
        tag_cells = "\t".join(f"mood/theme---{tag}" for tag in tags)
        lines.append(
            f"track_{number:07d}\tartist_1\talbum_1\t{number % 100:02d}/{number}.{extension}"
            f"\t30.0\t{tag_cells}"
        )
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def npy_corpus(tmp_path: Path, mels, tags=None):
    """A split whose track k has melspec mels[k] at ROOT/NN/k.npy; returns (tsv, root)."""
    root = tmp_path / "mels"
    rows = []
    for number, mel in enumerate(mels):
        path = root / f"{number:02d}" / f"{number}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, mel)
        rows.append((number, "mp3", tags[number] if tags else [MOODTHEME_TAGS[number]]))
    return write_split(tmp_path, rows), str(root)


def unbatched(dataset):
    """(mels, labels, ids) as numpy, in dataset order."""
    mels, labels, ids = [], [], []
    for mel, label, track_id in dataset:
        mels.extend(mel.numpy())
        labels.extend(label.numpy())
        ids.extend(t.decode() for t in track_id.numpy())
    return np.array(mels), np.array(labels), ids


@pytest.fixture
def ramp_corpus(tmp_path):
    lengths = [500, 1600, 1400, 37, 900]
    return npy_corpus(tmp_path, [ramp_mel(k, n) for k, n in enumerate(lengths)]) + (lengths,)


def test_npy_eval_shapes_order_and_tiling(ramp_corpus):
    tsv, root, _ = ramp_corpus
    dataset = make_dataset(tsv, root, source="npy", batch_size=2, **QUIET)
    mel, labels = next(iter(dataset))
    assert mel.shape == (2, 96, 1400) and mel.dtype == "float32"
    assert labels.shape == (2, 56) and labels.dtype == "float32"

    mels, labels, ids = unbatched(make_dataset(tsv, root, batch_size=2, with_ids=True, **QUIET))
    assert ids == [f"track_{k:07d}" for k in range(5)]  # element i = row i
    np.testing.assert_array_equal(labels, np.eye(56, dtype=np.float32)[:5])
    # 500 frames -> frames 0..499, 0..499, 0..399.
    expected = np.concatenate([ramp_mel(0, 500)] * 2 + [ramp_mel(0, 500)[:, :400]], axis=1)
    np.testing.assert_array_equal(mels[0], expected)
    np.testing.assert_array_equal(mels[1], ramp_mel(1, 1600)[:, :1400])  # longer: first frames
    np.testing.assert_array_equal(mels[2], ramp_mel(2, 1400))
    np.testing.assert_array_equal(mels[3], np.tile(ramp_mel(3, 37), (1, 38))[:, :1400])
    again = unbatched(make_dataset(tsv, root, batch_size=3, with_ids=True, **QUIET))
    np.testing.assert_array_equal(again[0], mels)


def test_npy_layouts_float64_and_fortran(tmp_path):
    mel = ramp_mel(1, 40)
    tsv, root = npy_corpus(
        tmp_path, [mel.astype(np.float64), np.asfortranarray(mel), mel.astype(">f4")]
    )
    mels, _, _ = unbatched(make_dataset(tsv, root, n_frames=40, with_ids=True, **QUIET))
    for decoded in mels:
        np.testing.assert_array_equal(decoded, mel)


def test_shards_read_back_like_npy_and_index(ramp_corpus, tmp_path):
    tsv, root, _ = ramp_corpus
    out = tmp_path / "shards"
    index = write_shards(tsv, root, str(out), shard_size=2, **QUIET)
    assert [s["count"] for s in index["shards"]] == [2, 2, 1] and index["total"] == 5
    on_disk = json.loads((out / "index.json").read_text())
    assert on_disk == index and all((out / s["file"]).exists() for s in index["shards"])

    from_npy = unbatched(make_dataset(tsv, root, n_frames=1400, with_ids=True, **QUIET))
    from_shards = unbatched(make_dataset(tsv, str(out), source="tfrecord", with_ids=True))
    without_tsv = unbatched(make_dataset(None, str(out), source="tfrecord", with_ids=True))
    for a, b, c in zip(from_npy, from_shards, without_tsv):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        np.testing.assert_array_equal(np.asarray(a), np.asarray(c))


def test_shards_max_frames_and_split_mismatch(ramp_corpus, tmp_path):
    tsv, root, _ = ramp_corpus
    write_shards(tsv, root, str(tmp_path / "short"), shard_size=4, max_frames=100, **QUIET)
    mels, _, _ = unbatched(
        make_dataset(None, str(tmp_path / "short"), source="tfrecord", n_frames=250, with_ids=True)
    )
    np.testing.assert_array_equal(mels[1], np.tile(ramp_mel(1, 100), (1, 3))[:, :250])
    other = write_split(tmp_path, [(7, "mp3", ["calm"])], name="other.tsv")
    with pytest.raises(ValueError, match="do not match"):
        make_dataset(other, str(tmp_path / "short"), source="tfrecord")


def test_shard_resume_after_interruption(ramp_corpus, tmp_path, monkeypatch):
    tsv, root, _ = ramp_corpus
    out = tmp_path / "shards"
    real_record = shards.mel_record
    calls = {"records": 0, "loads": 0}

    def failing_record(*args):
        calls["records"] += 1
        if calls["records"] == 3:  # first record of the second shard
            raise KeyboardInterrupt
        return real_record(*args)

    monkeypatch.setattr(shards, "mel_record", failing_record)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tsv, root, str(out), shard_size=2, **QUIET)
    names = sorted(p.name for p in out.iterdir())
    assert "autotagging" not in names[0]  # the TSV stem names the shards
    assert "split-00000-of-00003.tfrecord" in names and "split-00000-of-00003.json" in names
    assert "split-00001-of-00003.tfrecord" not in names and "index.json" not in names
    assert any(".tmp-" in name for name in names)

    real_inspect = shards.inspect_npy

    def counting_inspect(*args):
        calls["loads"] += 1
        return real_inspect(*args)

    monkeypatch.setattr(shards, "mel_record", real_record)
    monkeypatch.setattr(shards, "inspect_npy", counting_inspect)
    index = write_shards(tsv, root, str(out), shard_size=2, **QUIET)
    assert calls["loads"] == 3  # the finished shard was not rewritten
    assert index["total"] == 5 and not [p for p in out.iterdir() if ".tmp-" in p.name]
    ids = unbatched(make_dataset(tsv, str(out), source="tfrecord", with_ids=True))[2]
    assert ids == [f"track_{k:07d}" for k in range(5)]


# ---- whole-track melspecs: only the frames used are read


def whole_track(track: int, frames: int = 3000, nan_after: int | None = None) -> np.ndarray:
    """A ramp melspec longer than a crop, with NaN from frame `nan_after` on when given."""
    mel = ramp_mel(track, frames)
    if nan_after is not None:
        mel[:, nan_after:] = np.nan
    return mel


def test_nan_after_the_crop_is_accepted_and_the_crop_loads(tmp_path):
    tsv, root = npy_corpus(tmp_path, [whole_track(0, nan_after=1400), whole_track(1)])
    mels, _, ids = unbatched(make_dataset(tsv, root, with_ids=True, **QUIET))
    assert ids == ["track_0000000", "track_0000001"]
    for k, mel in enumerate(mels):
        expected = np.load(Path(root) / f"{k:02d}" / f"{k}.npy")[:, :1400]
        np.testing.assert_array_equal(mel, expected)
    # A random crop (or the silence skip) uses the whole track: there the NaN frames are bad.
    for options in ({"training": True, "random_crop": True}, {"skip_silence": True}):
        with pytest.raises(ValueError, match="0.npy: .*NaN or inf"):
            make_dataset(tsv, root, **options, **QUIET)
    with pytest.raises(ValueError, match="0.npy: .*NaN or inf"):
        make_dataset(tsv, root, n_frames=1401, **QUIET)


def test_truncated_tail_beyond_the_crop_is_still_refused(tmp_path):
    tsv, root = npy_corpus(tmp_path, [whole_track(0)])
    path = Path(root) / "00" / "0.npy"
    path.write_bytes(path.read_bytes()[:-4])  # the last value of the last band
    with pytest.raises(ValueError, match="0.npy: truncated: 1151996 data bytes"):
        make_dataset(tsv, root, **QUIET)
    # Reading stops short of the end only where the frames asked for are missing.
    layout = npy_files.read_layout(str(path))
    for where in (str(path), f"file://{path}"):
        np.testing.assert_array_equal(
            npy_files.read_frames(where, layout, 1400), whole_track(0)[:, :1400]
        )
        with pytest.raises(ValueError, match="truncated: read 1151996 of 1152000 bytes"):
            npy_files.read_frames(where, layout)


def test_read_frames_reads_only_the_bytes_of_the_frames(tmp_path, monkeypatch):
    path = tmp_path / "track.npy"
    np.save(path, whole_track(3, frames=10000))
    layout = npy_files.read_layout(str(path))
    assert (layout.rows, layout.cols, layout.dtype) == (96, 10000, "<f4")
    real_preadv = os.preadv
    counted = []

    def counting_preadv(descriptor, buffers, offset):
        got = real_preadv(descriptor, buffers, offset)
        counted.append(got)
        return got

    monkeypatch.setattr(os, "preadv", counting_preadv)
    mel = npy_files.read_frames(str(path), layout, 1400)
    assert len(counted) == 96 and sum(counted) == 96 * 1400 * 4  # 96 runs of 1400 values
    assert sum(counted) < path.stat().st_size / 7
    np.testing.assert_array_equal(mel, np.load(path)[:, :1400])


@pytest.mark.parametrize(
    "layout",
    ["float32", "float16", "float64", "big-endian", "fortran", "fortran-float16"],
)
def test_whole_track_layouts_load_the_first_frames(tmp_path, layout):
    mel = whole_track(2, frames=2500) / 1000.0  # values float16 holds to within 1e-3 relative
    stored = {
        "float32": mel,
        "float16": mel.astype(np.float16),
        "float64": mel.astype(np.float64),
        "big-endian": mel.astype(">f4"),
        "fortran": np.asfortranarray(mel),
        "fortran-float16": np.asfortranarray(mel.astype(np.float16)),
    }[layout]
    tsv, root = npy_corpus(tmp_path, [stored])
    path = Path(root) / "00" / "0.npy"
    expected = np.load(path)[:, :1400].astype(np.float32)
    assert expected.dtype == np.float32 and np.isfinite(expected).all()
    mels, _, _ = unbatched(make_dataset(tsv, root, with_ids=True, **QUIET))
    np.testing.assert_array_equal(mels[0], expected)
    parsed = npy_files.read_layout(str(path))
    assert parsed.fortran_order == layout.startswith("fortran")
    # The ranged tf.io.gfile reads (the path of gs:// and other file systems) agree.
    np.testing.assert_array_equal(npy_files.read_frames(f"file://{path}", parsed, 1400), expected)
    np.testing.assert_array_equal(
        npy_files.read_frames(str(path), parsed), np.load(path).astype(np.float32)
    )


BAD_MELSPECS = {  # file stem: the reason the error must give
    "missing": "missing file",
    "corrupt": "not a .npy file",
    "truncated": "truncated",
    "nan": "NaN or inf",
    "inf": "NaN or inf",
    "rows64": "64 mel bands (rows), expected 96",
    "three_d": "3-D array",
    "one_d": "1-D array",
    "objects": "Python objects",
    "integers": "is not a float",
    "no_frames": "no frames",
}


def write_bad_npys(root: Path) -> dict:
    """One bad melspec per entry of BAD_MELSPECS (and none for "missing"); returns that dict."""
    bad = BAD_MELSPECS
    root.mkdir(parents=True, exist_ok=True)
    good = ramp_mel(0, 20)
    (root / "corrupt.npy").write_bytes(b"certainly not numpy data")
    np.save(root / "truncated.npy", good)
    (root / "truncated.npy").write_bytes((root / "truncated.npy").read_bytes()[:-100])
    np.save(root / "nan.npy", np.where(good > 5000, np.nan, good).astype(np.float32))
    np.save(root / "inf.npy", np.where(good > 5000, np.inf, good).astype(np.float32))
    np.save(root / "rows64.npy", good[:64])
    np.save(root / "three_d.npy", good[:, :, None])
    np.save(root / "one_d.npy", good[:, 0])
    np.save(root / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(root / "integers.npy", good.astype(np.int32))
    np.save(root / "no_frames.npy", good[:, :0])
    return bad


def bad_split(tmp_path: Path, stems) -> str:
    lines = [HEADER, "track_0\ta\tb\tgood.mp3\t1.0\tmood/theme---calm"]
    for number, stem in enumerate(stems, start=1):
        lines.append(f"track_{number}\ta\tb\t{stem}.mp3\t1.0\tmood/theme---sad")
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.mark.parametrize("stem", sorted(BAD_MELSPECS))
def test_bad_melspec_fails_with_file_and_reason(tmp_path, stem):
    root = tmp_path / "mels"
    reasons = write_bad_npys(root)
    np.save(root / "good.npy", ramp_mel(0, 20))
    tsv = bad_split(tmp_path, [stem])
    with pytest.raises(ValueError) as error:
        make_dataset(tsv, str(root), **QUIET)
    message = str(error.value)
    assert str(root / f"{stem}.npy") in message and reasons[stem] in message


def test_skip_bad_lists_every_skipped_file(tmp_path, caplog):
    root = tmp_path / "mels"
    reasons = write_bad_npys(root)
    np.save(root / "good.npy", ramp_mel(0, 20))
    tsv = bad_split(tmp_path, sorted(reasons))
    log = tmp_path / "skipped.tsv"
    dataset = make_dataset(
        tsv, str(root), skip_bad=True, skipped_log=str(log), n_frames=20, with_ids=True, **QUIET
    )
    assert unbatched(dataset)[2] == ["track_0"]
    lines = log.read_text().splitlines()
    assert lines[0] == "path\ttrack_id\treason" and len(lines) == 1 + len(reasons)
    for line, stem in zip(lines[1:], sorted(reasons)):
        path, _, reason = line.split("\t")
        assert path == str(root / f"{stem}.npy") and reasons[stem] in reason
    assert "skipped 11 of 12 files" in caplog.text


def test_shard_cli_fails_or_skips_bad_files(tmp_path, capsys):
    root = tmp_path / "mels"
    write_bad_npys(root)
    np.save(root / "good.npy", ramp_mel(0, 20))
    tsv = bad_split(tmp_path, ["nan", "rows64"])
    out = tmp_path / "shards"
    args = ["shard", "--tsv", tsv, "--root", str(root), "--out", str(out), "--no-progress"]
    assert cli_main(args) == 2
    assert f"{root / 'nan.npy'}: " in capsys.readouterr().err
    assert cli_main(args + ["--skip-bad", "--shard-size", "2"]) == 0
    assert "1 tracks in 2 shards, 2 skipped" in capsys.readouterr().out
    skipped = (out / "skipped.tsv").read_text().splitlines()
    assert [line.split("\t")[1] for line in skipped[1:]] == ["track_1", "track_2"]
    index = json.loads((out / "index.json").read_text())
    assert index["total"] == 1 and len(index["skipped"]) == 2


def test_skip_silence(tmp_path):
    loud = ramp_mel(0, 300) / 1000.0 - 100.0  # -100 .. +90 dB
    mel = loud.copy()
    mel[:, :100] = -200.0
    mel[3, 50] = loud.max() - 70.0  # a blip 70 dB down is still silence at 60 dB
    tsv, root = npy_corpus(tmp_path, [mel])
    mels, _, _ = unbatched(
        make_dataset(tsv, root, n_frames=200, skip_silence=True, with_ids=True, **QUIET)
    )
    np.testing.assert_array_equal(mels[0], mel[:, 100:300])
    mels, _, _ = unbatched(
        make_dataset(
            tsv, root, n_frames=200, skip_silence=True, silence_db=80.0, with_ids=True, **QUIET
        )
    )
    np.testing.assert_array_equal(mels[0], mel[:, 50:250])


def test_random_crop_windows_change_per_epoch(tmp_path):
    lengths = [300, 40, 250, 64]
    tsv, root = npy_corpus(tmp_path, [ramp_mel(k, n) for k, n in enumerate(lengths)])
    dataset = make_dataset(
        tsv,
        root,
        training=True,
        random_crop=True,
        n_frames=64,
        batch_size=4,
        with_ids=True,
        seed=3,
        **QUIET,
    )
    starts = []
    for _ in range(2):
        mels, _, ids = unbatched(dataset)
        assert sorted(ids) == [f"track_{k:07d}" for k in range(4)]
        epoch = {}
        for mel, track_id in zip(mels, ids):
            k = int(track_id[-1])
            start = int(mel[0, 0] - 200000.0 * k)
            if lengths[k] < 64:
                np.testing.assert_array_equal(mel, np.tile(ramp_mel(k, 40), (1, 2))[:, :64])
            else:
                assert 0 <= start <= lengths[k] - 64
                np.testing.assert_array_equal(mel, ramp_mel(k, lengths[k])[:, start : start + 64])
            epoch[k] = start
        starts.append(epoch)
    assert starts[0] != starts[1]


def test_masks_replace_whole_rows_and_columns_with_the_mean(tmp_path):
    tsv, root = npy_corpus(tmp_path, [ramp_mel(k, 80) for k in range(6)])
    dataset = make_dataset(
        tsv,
        root,
        training=True,
        n_frames=80,
        time_masks=2,
        time_mask_width=10,
        freq_masks=1,
        freq_mask_width=8,
        batch_size=6,
        with_ids=True,
        **QUIET,
    )
    mels, _, ids = unbatched(dataset)
    masked_somewhere = 0
    for mel, track_id in zip(mels, ids):
        original = ramp_mel(int(track_id[-1]), 80)
        changed = mel != original
        columns = np.flatnonzero(changed.all(axis=0))
        rows = np.flatnonzero(changed.all(axis=1))
        expected = np.zeros_like(changed)
        expected[:, columns] = True
        expected[rows, :] = True
        np.testing.assert_array_equal(changed, expected)  # only whole rows/columns
        assert len(columns) <= 20 and len(rows) <= 8
        np.testing.assert_allclose(mel[changed], original.mean(), rtol=1e-6)
        masked_somewhere += len(columns) + len(rows)
    assert masked_somewhere > 0


def test_mixup_gives_convex_combinations(tmp_path):
    values = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    mels = [np.full((96, 8), v, dtype=np.float32) for v in values]
    tsv, root = npy_corpus(tmp_path, mels)
    dataset = make_dataset(
        tsv, root, training=True, n_frames=8, mixup_alpha=0.4, batch_size=8, with_ids=True, **QUIET
    )
    mixed, labels, ids = unbatched(dataset)
    assert np.all(labels >= 0) and np.all(labels <= 1)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    # Labels are one-hot at column k for track k: the same weights must mix the mels.
    np.testing.assert_allclose(mixed[:, 0, 0], labels[:, :8] @ np.array(values), rtol=1e-5)
    assert np.allclose(mixed, mixed[:, :1, :1])  # still constant per example
    for label, track_id in zip(labels, ids):
        assert label[int(track_id[-1])] >= 0.5  # the example keeps the larger weight
    assert np.any((labels > 0.01) & (labels < 0.99))


def test_training_order_is_shuffled_and_seeded(ramp_corpus):
    tsv, root, _ = ramp_corpus
    orders = []
    for seed in (0, 0, 1):
        dataset = make_dataset(
            tsv, root, training=True, n_frames=32, batch_size=5, with_ids=True, seed=seed, **QUIET
        )
        orders.append(unbatched(dataset)[2])
    assert orders[0] == orders[1] and sorted(orders[0]) == sorted(orders[2])
    assert orders[0] != [f"track_{k:07d}" for k in range(5)] or orders[2] != orders[0]


def test_options_are_checked(ramp_corpus):
    tsv, root, _ = ramp_corpus
    with pytest.raises(ValueError, match="unknown data options"):
        make_dataset(tsv, root, batch_sise=4)
    with pytest.raises(ValueError, match="source must be one of"):
        make_dataset(tsv, root, source="mp3")
    with pytest.raises(ValueError, match="n_frames must be >= 1"):
        DataConfig(n_frames=0)
    with pytest.raises(ValueError, match="mixup_alpha"):
        DataConfig(mixup_alpha=-1)


# ---- audio


def write_wav(path: Path, samples: np.ndarray, rate: int = 12000) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, rate, subtype="PCM_16")


def test_audio_source_and_shards(tmp_path):
    root = tmp_path / "audio"
    time = np.arange(12000) / 12000.0
    write_wav(root / "00" / "0.wav", 0.5 * np.sin(2 * np.pi * 440.0 * time))
    write_wav(root / "01" / "1.wav", 0.3 * np.sin(2 * np.pi * 1000.0 * time[:6000]), rate=24000)
    tsv = write_split(tmp_path, [(0, "wav", ["calm"]), (1, "wav", ["sad"])])
    mels, _, ids = unbatched(make_dataset(tsv, str(root), source="audio", with_ids=True, **QUIET))
    assert mels.shape == (2, 96, 1400) and ids == ["track_0000000", "track_0000001"]
    # 12000 samples at 12 kHz -> ceil(12000 / 256) + 1 = 48 frames, tiled with period 48.
    np.testing.assert_array_equal(mels[0][:, 48:96], mels[0][:, :48])
    # 6000 samples at 24 kHz -> 3000 at 12 kHz -> 13 frames.
    np.testing.assert_array_equal(mels[1][:, 13:26], mels[1][:, :13])
    assert not np.array_equal(mels[1][:, 12:25], mels[1][:, :13])
    band_440 = int(np.argmax(mels[0][:, 20]))
    band_1000 = int(np.argmax(mels[1][:, 6]))
    assert band_440 < band_1000  # the louder band follows the tone

    write_shards(tsv, str(root), str(tmp_path / "shards"), source="audio", **QUIET)
    from_shards = unbatched(
        make_dataset(tsv, str(tmp_path / "shards"), source="tfrecord", with_ids=True)
    )
    np.testing.assert_allclose(from_shards[0], mels, atol=1e-3)


def test_bad_audio_files(tmp_path):
    root = tmp_path / "audio"
    write_wav(root / "good.wav", 0.1 * np.ones(3000))
    write_wav(root / "empty.wav", np.zeros(0))
    (root / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage")
    (root / "notes.txt").write_text("not audio")
    lines = [HEADER, "t0\ta\tb\tgood.wav\t1.0\tmood/theme---calm"]
    stems = ["empty.wav", "corrupt.wav", "missing.wav", "notes.txt"]
    lines += [f"t{i}\ta\tb\t{stem}\t1.0\tmood/theme---sad" for i, stem in enumerate(stems, 1)]
    tsv = tmp_path / "audio.tsv"
    tsv.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=str(root / "empty.wav")):
        make_dataset(str(tsv), str(root), source="audio", **QUIET)
    valid = validate_files(
        read_split(str(tsv)), str(root), "audio", DataConfig(skip_bad=True, **QUIET)
    )
    assert [t.track_id for t in valid.tracks] == ["t0"]
    reasons = {Path(b.path).name: b.reason for b in valid.bad}
    assert set(reasons) == set(stems) and reasons["missing.wav"] == "missing file"
    assert "audio formats" in reasons["notes.txt"]
    assert all(reason and str(root) not in reason for reason in reasons.values())
