"""bench/bench_full_scale.py: the stand-in data set it lays out, and its rehearsal at a tiny scale."""

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tfmood.data.metadata import label_matrix, read_split
from tfmood.data.tags import MOODTHEME_TAGS

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_full_scale.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_full_scale", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_layout_is_the_official_one_with_hard_links(tmp_path):
    script = load_script()
    layout = script.write_layout(str(tmp_path), scale=0.01, pool_size=5)
    assert layout["sizes"] == {"train": 99, "validation": 64, "test": 64}  # 1% or the minimum
    seen = set()
    for split, tsv in layout["tsvs"].items():
        assert Path(tsv).name == f"autotagging_moodtheme-{split}.tsv"
        tracks = read_split(tsv)
        assert len(tracks) == layout["sizes"][split]
        labels = label_matrix(tracks)
        assert labels.all(axis=0).sum() == 0 and labels.any(axis=0).all()  # every tag usable
        assert (labels.sum(axis=1) >= 1).all()
        if split == "train":  # after the 56 tracks of one tag each: 1 + Poisson(0.7) tags
            assert 1.3 < labels[56:].sum(axis=1).mean() < 2.2
        for track in tracks:
            number = int(track.track_id.split("_")[1])
            assert track.path == f"{number % 100:02d}/{number}.mp3"
            path = Path(layout["root"]) / track.npy_path
            assert path.stat().st_nlink > 1  # a hard link into the pool
            mel = np.load(path, mmap_mode="r")
            assert mel.shape[0] == 96 and mel.dtype == np.float32
            assert track.duration == pytest.approx(mel.shape[1] * 256 / 12000, abs=0.06)
            seen.add(track.track_id)
    assert len(seen) == 99 + 64 + 64  # no track in two splits
    rows = script.track_tags(5000, np.random.default_rng(1))
    counts = Counter(tag for row in rows for tag in row)
    assert set(counts) == set(MOODTHEME_TAGS) and all(len(set(row)) == len(row) for row in rows)
    assert max(counts.values()) > 4 * min(counts.values())  # skewed, as the real tags are


@pytest.mark.slow
def test_rehearsal_at_a_tiny_scale(tmp_path):
    workdir = tmp_path / "rehearsal"
    command = [
        sys.executable, str(SCRIPT), "--scale", "0.001", "--pool", "6", "--epochs", "2",
        "--steps-per-epoch", "2", "--workdir", str(workdir),
    ]  # fmt: skip
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FAILED" not in done.stdout
    rows = [line.split("|")[1:-1] for line in done.stdout.splitlines() if line.startswith("| ")]
    table = {cells[0].strip(): [cell.strip() for cell in cells[1:]] for cells in rows[1:]}
    expected = [
        "labels train", "labels validation", "labels test", "train A",
        "train B (killed after epoch 1)", "train B (resumed)", "test A", "test B", "fuse A + B",
        "evaluate fusion", "all stages",
    ]  # fmt: skip
    assert list(table) == expected
    for name, (tracks, seconds, peak, status) in table.items():
        if name == "all stages":
            continue
        assert tracks == "64" and float(seconds) > 0 and 100 < float(peak.replace(",", "")) < 8000
        assert status == ("-9" if "killed" in name else "0")
    # The outputs, checked against independent computations.
    test_labels = label_matrix(read_split(str(workdir / "autotagging_moodtheme-test.tsv")))
    np.testing.assert_array_equal(np.load(workdir / "labels" / "test.npy"), test_labels)
    a, b = (np.load(workdir / "test" / name / "predictions.npy") for name in "ab")
    assert a.shape == (64, 56) and not np.array_equal(a, b)
    np.testing.assert_allclose(np.load(workdir / "fused.npy"), (a + b) / 2, rtol=1e-6)
    history = (workdir / "runs" / "b" / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in history[1:]] == ["0", "1"]
    metrics = json.loads((workdir / "report" / "metrics.json").read_text())
    assert 0.0 <= metrics["ROC-AUC-macro"] <= 1.0
    stages = json.loads((workdir / "report.json").read_text())
    assert [stage["name"] for stage in stages] == expected[:-1]
    assert all(os.path.exists(stage["log"]) for stage in stages)
