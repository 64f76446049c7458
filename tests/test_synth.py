"""The synthetic mood corpus: MTG-Jamendo files, audio, determinism, tag rules, splits, CLI.

The TSVs are read with a small parser written here from the MTG-Jamendo format (not tfmood's), the
rules are checked with predicates written here from the module's table, and the learnable audio
differences are measured on a numpy STFT with librosa's mel and chroma filterbanks.
"""

import hashlib
import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tfmood.data import synth
from tfmood.data.tags import MOODTHEME_TAGS

REPO = Path(__file__).resolve().parents[1]
SR = 12000
MTG_HEADER = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]


def parse_mtg_tsv(path):
    """Rows of an MTG-Jamendo split file as dicts; tags are the cells after DURATION."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    assert lines[0].split("\t") == MTG_HEADER
    rows = []
    for line in lines[1:]:
        cells = line.split("\t")
        assert len(cells) >= 6, f"{path}: a row needs at least one tag: {line!r}"
        rows.append(
            {
                "track_id": cells[0],
                "artist_id": cells[1],
                "album_id": cells[2],
                "path": cells[3],
                "duration": float(cells[4]),
                "tags": cells[5:],
            }
        )
    return rows


def read_corpus(root):
    """split -> rows, the synth.json contents."""
    splits = {
        split: parse_mtg_tsv(Path(root) / f"autotagging_moodtheme-{split}.tsv")
        for split in ("train", "validation", "test")
    }
    meta = json.loads((Path(root) / "synth.json").read_text(encoding="utf-8"))
    return splits, meta


def names(tags):
    return {tag.split("---", 1)[1] for tag in tags}


def file_hashes(root):
    """sha256 of every file under root, keyed by relative path."""
    hashes = {}
    for path in sorted(Path(root).rglob("*")):
        if path.is_file():
            hashes[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """40 tracks of 1.5 s."""
    root = tmp_path_factory.mktemp("small")
    info = synth.generate_corpus(str(root), 40, 1.5, seed=3, progress=False)
    return root, info


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """300 tracks of 0.25 s: enough for the split coverage and the rule statistics."""
    root = tmp_path_factory.mktemp("medium")
    info = synth.generate_corpus(str(root), 300, 0.25, seed=11, progress=False)
    return root, info


# ------------------------------------------------------------------------------ files and format


def test_tsvs_parse_in_the_mtg_format(small):
    root, info = small
    splits, meta = read_corpus(root)
    seen = []
    for split, rows in splits.items():
        assert info.split_paths[split] == str(root / f"autotagging_moodtheme-{split}.tsv")
        for row in rows:
            number = int(re.fullmatch(r"track_(\d{7})", row["track_id"]).group(1))
            assert re.fullmatch(r"artist_\d{6}", row["artist_id"])
            assert re.fullmatch(r"album_\d{6}", row["album_id"])
            assert row["path"] == f"{number % 100:02d}/{number}.wav"
            assert row["duration"] == 1.5
            assert all(tag.startswith("mood/theme---") for tag in row["tags"])
            assert names(row["tags"]) <= set(MOODTHEME_TAGS)
            assert len(set(row["tags"])) == len(row["tags"]) >= 1
            seen.append(row["track_id"])
    assert sorted(seen) == [f"track_{k:07d}" for k in range(1, 41)]
    assert {split: len(rows) for split, rows in splits.items()} == info.split_counts
    assert [len(splits[split]) for split in ("train", "validation", "test")] == [28, 6, 6]
    assert [t["track_id"] for t in meta["tracks"]] == [f"track_{k:07d}" for k in range(1, 41)]


def test_tsvs_read_with_the_project_parser(small):
    from tfmood.data.metadata import read_split

    root, info = small
    splits, _ = read_corpus(root)
    for split, path in info.split_paths.items():
        tracks = read_split(path)
        assert [t.track_id for t in tracks] == [r["track_id"] for r in splits[split]]
        assert [set(t.tags) for t in tracks] == [names(r["tags"]) for r in splits[split]]


def test_wav_files_exist_with_rate_length_and_format(small):
    root, info = small
    splits, _ = read_corpus(root)
    assert info.audio_dir == str(root / "audio")
    for rows in splits.values():
        for row in rows:
            path = root / "audio" / row["path"]
            assert path.is_file(), path
            details = sf.info(str(path))
            assert (details.samplerate, details.channels, details.subtype) == (SR, 1, "PCM_16")
            assert details.frames == int(1.5 * SR)
            audio, _ = sf.read(str(path), dtype="float32")
            assert 1e-4 < np.sqrt(np.mean(audio**2)) < 0.5
    # Atomic writes leave no temporary files behind.
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_synth_json_describes_every_track(small):
    root, info = small
    splits, meta = read_corpus(root)
    split_of = {r["track_id"]: s for s, rows in splits.items() for r in rows}
    tags_of = {r["track_id"]: names(r["tags"]) for rows in splits.values() for r in rows}
    assert meta["seed"] == 3 and meta["sample_rate"] == SR and meta["seconds"] == 1.5
    assert meta["tags"] == list(info.tags) == synth.corpus_tags(str(root))
    for track in meta["tracks"]:
        assert set(track["params"]) >= {
            "key", "mode", "tempo", "bpm", "register", "loudness", "level_db", "timbre",
            "articulation", "percussion", "noise", "noise_db",
        }  # fmt: skip
        assert track["split"] == split_of[track["track_id"]]
        assert set(track["tags"]) == tags_of[track["track_id"]]


# ---------------------------------------------------------------------------------- determinism


def test_same_seed_gives_the_same_bytes_and_another_seed_other_data(tmp_path):
    first = synth.generate_corpus(str(tmp_path / "a"), 20, 0.5, seed=5, progress=False)
    synth.generate_corpus(str(tmp_path / "b"), 20, 0.5, seed=5, progress=False)
    synth.generate_corpus(str(tmp_path / "c"), 20, 0.5, seed=6, progress=False)
    a, b, c = (file_hashes(tmp_path / name) for name in "abc")
    assert len(a) == 20 + 3 + 1 and a == b
    assert first.n_tracks == 20
    wavs = [name for name in a if name.endswith(".wav")]
    assert sum(a[name] != c.get(name) for name in wavs) == len(wavs)
    assert a["synth.json"] != c["synth.json"]


def test_worker_processes_do_not_change_the_bytes(tmp_path):
    synth.generate_corpus(str(tmp_path / "one"), 20, 0.5, seed=8, progress=False, workers=1)
    synth.generate_corpus(str(tmp_path / "two"), 20, 0.5, seed=8, progress=False, workers=2)
    assert file_hashes(tmp_path / "one") == file_hashes(tmp_path / "two")


# ------------------------------------------------------------------------------------ tag rules

# Predicates written from the module table, independently of synth.TAG_RULES.
MINORISH = ("minor", "dorian")
RULES = {
    "sad": lambda p: p["mode"] == "minor" and p["tempo"] == "slow" and p["loudness"] == "soft",
    "calm": lambda p: p["mode"] == "major" and p["tempo"] == "slow" and p["loudness"] == "soft",
    "energetic": lambda p: p["tempo"] == "fast"
    and p["loudness"] == "loud"
    and p["percussion"] != "none",
    "dark": lambda p: p["mode"] in MINORISH and p["register"] == "low" and p["timbre"] != "pure",
    "heavy": lambda p: p["mode"] in MINORISH and p["register"] == "low" and p["loudness"] == "loud",
    "children": lambda p: p["mode"] == "major"
    and p["register"] == "high"
    and p["timbre"] in ("pure", "mellow"),
    "soundscape": lambda p: p["noise"] == "ambient" and p["percussion"] == "none",
    "meditative": lambda p: p["tempo"] == "slow"
    and p["timbre"] == "pure"
    and p["percussion"] == "none",
    "happy": lambda p: p["mode"] == "major" and p["tempo"] == "fast" and p["percussion"] != "none",
    "film": lambda p: p["mode"] in MINORISH
    and p["articulation"] == "legato"
    and p["percussion"] == "none",
}


def rule_agreement(tracks, tag):
    """(share of rule-matching tracks carrying the tag, share of the others carrying it, n)."""
    matching = [tag in t["tags"] for t in tracks if RULES[tag](t["params"])]
    others = [tag in t["tags"] for t in tracks if not RULES[tag](t["params"])]
    return np.mean(matching), np.mean(others), len(matching)


def test_tag_rules_hold_on_the_written_parameters(medium):
    root, info = medium
    _, meta = read_corpus(root)
    for tag in RULES:
        assert tag in info.tags
        agree, stray, n = rule_agreement(meta["tracks"], tag)
        assert n >= 10, tag
        assert agree >= 0.9, (tag, agree)
        assert stray <= 0.03, (tag, stray)


def test_tag_rules_hold_on_many_draws():
    rng = np.random.default_rng(21)
    tracks = []
    for _ in range(3000):
        params = synth.sample_track_params(rng)
        tracks.append({"params": params.to_dict(), "tags": synth.tags_for(params, rng, 0.05)})
    agreements = []
    for tag in RULES:
        agree, stray, n = rule_agreement(tracks, tag)
        assert n >= 100, tag
        assert agree >= 0.9, (tag, agree)
        assert stray <= 0.01, (tag, stray)
        agreements.append(agree)
    # The misses are the label noise (5%), not broken rules.
    assert 0.93 < np.mean(agreements) < 0.97


def test_rule_tags_give_two_to_five_tags_and_cover_the_vocabulary():
    rng = np.random.default_rng(2)
    counts, seen = [], Counter()
    for _ in range(2000):
        tags = synth.rule_tags(synth.sample_track_params(rng))
        counts.append(len(tags))
        seen.update(tags)
    assert min(counts) >= 2 and max(counts) <= 5
    assert 3.0 < np.mean(counts) < 4.0
    assert set(seen) == set(synth.PRODUCIBLE_TAGS)
    assert len(synth.PRODUCIBLE_TAGS) >= 25
    assert {rule.tag for rule in synth.TAG_RULES} == set(synth.PRODUCIBLE_TAGS)


@pytest.mark.parametrize("noise", [0.0, 0.05, 0.2])
def test_label_noise_rate_is_near_the_configured_value(noise):
    rng = np.random.default_rng(4)
    replaced = total = 0
    for _ in range(4000):
        params = synth.sample_track_params(rng)
        clean = synth.rule_tags(params)
        noisy = synth.tags_for(params, rng, noise)
        assert len(noisy) == len(clean) and set(noisy) <= set(synth.PRODUCIBLE_TAGS)
        replaced += len(set(clean) - set(noisy))
        total += len(clean)
    # About 14,000 rule tags: the binomial standard deviation is below 0.004.
    assert abs(replaced / total - noise) < 0.012


def test_prevalence_matches_sampling():
    exact = synth.tag_prevalence()
    assert set(exact) == set(synth.PRODUCIBLE_TAGS)
    rng = np.random.default_rng(9)
    n = 6000
    counts = Counter(t for _ in range(n) for t in synth.rule_tags(synth.sample_track_params(rng)))
    for tag, p in exact.items():
        assert abs(counts[tag] / n - p) < 4 * np.sqrt(p * (1 - p) / n) + 1e-3, tag
    assert min(exact.values()) > 0.03
    # Tags expected at least once in the smallest split: all of them at 600 tracks.
    assert synth.frequent_tags(600) == list(synth.PRODUCIBLE_TAGS)
    assert set(synth.frequent_tags(60)) < set(synth.frequent_tags(300))


def test_docstring_table_matches_the_rules():
    table = {}
    for line in synth.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0] in MOODTHEME_TAGS:
            table[cells[0]] = (cells[1], float(cells[2]))
    assert set(table) == set(synth.PRODUCIBLE_TAGS)
    prevalence = synth.tag_prevalence()
    for rule in synth.TAG_RULES:
        conditions = dict(c.split("=") for c in table[rule.tag][0].split(", "))
        as_written = {k: tuple(v.replace("minorish", "minor/dorian").split("/"))
                      for k, v in conditions.items()}  # fmt: skip
        assert as_written == dict(rule.conditions), rule.tag
        assert abs(table[rule.tag][1] - 100 * prevalence[rule.tag]) < 0.051, rule.tag


# ---------------------------------------------------------------------------------------- splits


def test_every_tag_in_use_has_a_positive_and_a_negative_in_every_split(medium):
    root, info = medium
    splits, meta = read_corpus(root)
    in_tsvs = set().union(*(names(r["tags"]) for rows in splits.values() for r in rows))
    assert in_tsvs == set(info.tags) == set(meta["tags"])
    assert len(info.tags) >= 50
    for split, rows in splits.items():
        for tag in info.tags:
            carried = [tag in names(r["tags"]) for r in rows]
            assert any(carried) and not all(carried), (split, tag)


def test_small_corpora_keep_every_track_tagged_and_the_tags_covered(tmp_path):
    info = synth.generate_corpus(str(tmp_path), 20, 0.25, seed=0, progress=False)
    splits, meta = read_corpus(tmp_path)
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [14, 3, 3]
    assert len(info.tags) >= 3
    for rows in splits.values():
        for tag in info.tags:
            carried = [tag in names(r["tags"]) for r in rows]
            assert any(carried) and not all(carried)
    for track in meta["tracks"]:
        assert track["tags"] and set(track["tags"]) <= set(info.tags)


def test_split_sizes_by_largest_remainder():
    assert synth.split_sizes(20, (0.7, 0.15, 0.15)) == [14, 3, 3]
    assert synth.split_sizes(7, (1, 1, 1)) == [3, 2, 2]
    assert synth.split_sizes(101, (0.7, 0.15, 0.15)) == [71, 15, 15]
    with pytest.raises(ValueError, match="positive"):
        synth.split_sizes(10, (0.7, 0.0, 0.3))


def test_stratified_split_spreads_a_rare_tag_over_every_split():
    # 20 tracks; "sad" on three of them only, placed first, one per split.
    tag_sets = [["happy"]] * 17 + [["sad", "happy"]] * 3
    split = synth.stratified_split(tag_sets, (0.7, 0.15, 0.15), np.random.default_rng(0))
    assert sorted(split[17:]) == [0, 1, 2]
    assert np.bincount(split, minlength=3).tolist() == [14, 3, 3]


def test_too_small_corpora_are_refused(tmp_path):
    with pytest.raises(ValueError, match="at least 3"):
        synth.generate_corpus(str(tmp_path), 12, 0.5, seed=0, progress=False)


# ----------------------------------------------------------------------------------------- audio


def params_with(**changes):
    base = dict(
        key="C", mode="major", progression=0, tempo="medium", bpm=110.0, register="mid",
        loudness="loud", level_db=-14.0, timbre="mellow", articulation="legato",
        percussion="none", noise="clean", noise_db=-55.0,
    )  # fmt: skip
    base.update(changes)
    return synth.TrackParams(**base)


def render(params, seconds=10.0):
    return synth.synthesize_track(params, seconds, SR, np.random.default_rng(0))


def power_spectrogram(audio, n_fft, hop=256):
    """|STFT|^2 with centred, zero-padded Hann frames, (n_fft // 2 + 1, frames)."""
    padded = np.pad(audio.astype(np.float64), n_fft // 2)
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop]
    return np.abs(np.fft.rfft(frames * np.hanning(n_fft), axis=1)).T ** 2


def log_mel(audio):
    """96-band log-mel (dB) as in the MTG-Jamendo front-end, with librosa's Slaney filterbank."""
    import librosa

    bank = librosa.filters.mel(sr=SR, n_fft=512, n_mels=96, fmin=0, fmax=6000)
    return 10 * np.log10(np.maximum(bank @ power_spectrogram(audio, 512), 1e-10))


def chroma_profile(audio):
    """Mean chroma (librosa's filterbank at A440, each frame scaled to a maximum of 1)."""
    import librosa

    chroma = librosa.filters.chroma(sr=SR, n_fft=2048, tuning=0.0) @ power_spectrogram(audio, 2048)
    chroma /= np.maximum(chroma.max(axis=0, keepdims=True), 1e-12)
    return chroma.mean(axis=1)  # base_c: C first


def test_synthesize_track_length_type_and_level():
    audio = render(params_with(loudness="soft", level_db=-28.0), seconds=3.3)
    assert audio.dtype == np.float32 and audio.shape == (round(3.3 * SR),)
    rms_db = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    assert abs(rms_db - (-28.0)) < 0.5
    loud = render(params_with(percussion="full", level_db=-11.0), seconds=3.3)
    assert np.max(np.abs(loud)) <= 0.98


def test_register_moves_the_mel_energy_up():
    centroids = []
    for register in ("low", "mid", "high"):
        mel = 10 ** (log_mel(render(params_with(register=register))) / 10)
        centroids.append(np.sum(np.arange(96) * mel.mean(axis=1)) / np.sum(mel.mean(axis=1)))
    assert centroids[0] + 3 < centroids[1] and centroids[1] + 3 < centroids[2]


def test_loudness_sets_the_mel_level():
    soft = log_mel(render(params_with(loudness="soft", level_db=-30.0)))
    loud = log_mel(render(params_with(loudness="loud", level_db=-12.0)))
    assert 14 < np.median(loud.max(axis=0)) - np.median(soft.max(axis=0)) < 22


def test_percussion_adds_broadband_transients():
    def high_band_flux(percussion):
        mel = log_mel(render(params_with(percussion=percussion)))
        return np.mean(np.maximum(np.diff(mel[72:], axis=1), 0))

    assert high_band_flux("full") > 3 * high_band_flux("none")


@pytest.mark.parametrize("bpm", [70.0, 110.0, 160.0])
def test_tempo_sets_the_onset_periodicity(bpm):
    audio = render(params_with(bpm=bpm, percussion="full", articulation="staccato"), 20.0)
    mel = log_mel(audio)
    onsets = np.mean(np.maximum(np.diff(mel, axis=1), 0), axis=0)  # spectral flux
    onsets -= onsets.mean()
    autocorrelation = np.correlate(onsets, onsets, "full")[len(onsets) - 1 :]
    frames_per_second = SR / 256
    lags = np.arange(int(0.2 * frames_per_second), int(1.6 * frames_per_second))
    period = lags[np.argmax(autocorrelation[lags])] / frames_per_second
    beat = 60.0 / bpm
    # The strongest periodicity is the beat, or the half or whole bar / the eighth note.
    assert min(abs(period / (beat * f) - 1) for f in (0.5, 1.0, 2.0)) < 0.06, period


def test_mode_sets_the_third_and_sixth_of_the_key():
    def profile(mode):
        """Mean chroma of a track in D, rotated so that D comes first."""
        return np.roll(chroma_profile(render(params_with(mode=mode, key="D"), 20.0)), -2)

    major, minor, dorian = profile("major"), profile("minor"), profile("dorian")
    assert np.argmax(major) == np.argmax(minor) == np.argmax(dorian) == 0  # the tonic, D
    assert major[4] - major[3] > 0.1  # F# over F: major third
    assert minor[3] - minor[4] > 0.1  # F over F#: minor third
    assert minor[8] - minor[9] > 0.05  # Bb over B: minor sixth
    assert dorian[9] - dorian[8] > 0.05  # B over Bb: dorian's major sixth


# ------------------------------------------------------------------------------------------- CLI


def test_cli_writes_a_corpus(tmp_path):
    out = tmp_path / "corpus"
    result = subprocess.run(
        [sys.executable, "-m", "tfmood", "synth", "--out", str(out), "--tracks", "20",
         "--seconds", "0.5", "--seed", "2", "--workers", "1", "--quiet"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "20 tracks (train 14, validation 3, test 3)" in result.stdout
    splits, meta = read_corpus(out)
    assert sum(len(rows) for rows in splits.values()) == 20
    assert sf.info(str(out / "audio" / splits["test"][0]["path"])).frames == SR // 2
    # The library with the same arguments writes the same bytes.
    synth.generate_corpus(str(tmp_path / "library"), 20, 0.5, seed=2, progress=False)
    assert file_hashes(out) == file_hashes(tmp_path / "library")


def test_cli_sample_rate_and_bad_input(tmp_path, capsys):
    from tfmood.cli import main

    out = tmp_path / "c16k"
    args = ["synth", "--out", str(out), "--tracks", "20", "--seconds", "0.25", "--quiet"]
    assert main(args + ["--sample-rate", "16000", "--workers", "1"]) == 0
    splits, _ = read_corpus(out)
    details = sf.info(str(out / "audio" / splits["train"][0]["path"]))
    assert (details.samplerate, details.frames) == (16000, 4000)
    capsys.readouterr()
    assert main(["synth", "--out", str(tmp_path / "x"), "--tracks", "5", "--quiet"]) == 2
    assert "every split needs at least 3" in capsys.readouterr().err
    assert main(["synth", "--out", str(tmp_path / "y"), "--seconds", "0", "--quiet"]) == 2
