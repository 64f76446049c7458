"""Split-file parsing and the (tracks x 56) mood/theme label matrix."""

import csv
from pathlib import Path

import numpy as np
import pytest

from tfmood.cli import main as cli_main
from tfmood.data.metadata import label_matrix, parse_split, read_labels, read_split, write_labels
from tfmood.data.tags import MOODTHEME_TAGS, N_TAGS

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "mtg_metadata"
HEADER = "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"

# Own fixture: genre/instrument tags mixed in, a repeated tag, 1 to 3 mood tags per row.
FIXTURE_ROWS = [
    "track_0000010\tartist_000001\talbum_000001\t10/10.mp3\t212.7\tmood/theme---calm",
    (
        "track_0000011\tartist_000001\talbum_000001\t11/11.mp3\t99.5\tgenre---rock\t"
        "mood/theme---sad\tinstrument---piano\tmood/theme---action"
    ),
    (
        "track_0000020\tartist_000002\talbum_000003\t20/20.mp3\t31.0\tmood/theme---uplifting\t"
        "mood/theme---action\tmood/theme---uplifting\tmood/theme---film"
    ),
]
# Hand-built: column = position of the tag in the official order (action 0, calm 5, film 21,
# sad 44, uplifting 55).
EXPECTED_POSITIVES = {0: [5], 1: [0, 44], 2: [0, 21, 55]}


def write_tsv(path: Path, rows, newline="\n") -> Path:
    path.write_bytes(newline.join([HEADER, *rows, ""]).encode("utf-8"))
    return path


def hand_built_matrix() -> np.ndarray:
    expected = np.zeros((3, N_TAGS), dtype=bool)
    for row, columns in EXPECTED_POSITIVES.items():
        expected[row, columns] = True
    return expected


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_fixture_matrix_matches_hand_built(tmp_path, newline):
    tsv = write_tsv(tmp_path / "split.tsv", FIXTURE_ROWS, newline)
    track_ids, labels = read_labels(str(tsv))
    assert track_ids == ["track_0000010", "track_0000011", "track_0000020"]
    assert labels.dtype == bool and labels.shape == (3, 56)
    np.testing.assert_array_equal(labels, hand_built_matrix())


def test_track_fields_and_npy_path(tmp_path):
    tracks = read_split(str(write_tsv(tmp_path / "split.tsv", FIXTURE_ROWS)))
    second = tracks[1]
    assert (second.artist_id, second.album_id, second.path) == (
        "artist_000001",
        "album_000001",
        "11/11.mp3",
    )
    assert second.duration == pytest.approx(99.5)
    assert second.tags == ("sad", "action")  # genre and instrument dropped
    assert tracks[2].tags == ("uplifting", "action", "film")  # the repeat counted once
    assert second.npy_path == "11/11.npy"


BAD_ROWS = {
    "unknown mood/theme tag": "track_1\ta\tb\t1/1.mp3\t30.0\tmood/theme---gloomy",
    "no mood/theme tag": "track_1\ta\tb\t1/1.mp3\t30.0\tgenre---rock",
    "columns, expected at least 6": "track_1\ta\tb\t1/1.mp3\t30.0",
    "malformed tag": "track_1\ta\tb\t1/1.mp3\t30.0\tcalm",
    "unknown tag category": "track_1\ta\tb\t1/1.mp3\t30.0\tcolour---blue",
    "is not a number": "track_1\ta\tb\t1/1.mp3\tlong\tmood/theme---calm",
    "empty PATH": "track_1\ta\tb\t\t30.0\tmood/theme---calm",
}


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_bad_row_names_file_and_line(tmp_path, reason):
    tsv = write_tsv(tmp_path / "bad.tsv", [FIXTURE_ROWS[0], BAD_ROWS[reason]])
    with pytest.raises(ValueError) as error:
        read_split(str(tsv))
    message = str(error.value)
    assert str(tsv) in message and "line 3" in message and reason in message


def test_duplicate_track_id_names_both_lines(tmp_path):
    tsv = write_tsv(tmp_path / "dup.tsv", [FIXTURE_ROWS[0], FIXTURE_ROWS[1], FIXTURE_ROWS[0]])
    with pytest.raises(
        ValueError,
        match=r"dup\.tsv: line 4: duplicate TRACK_ID track_0000010 " r"\(first on line 2\)",
    ):
        read_split(str(tsv))


def test_bad_header_and_missing_file(tmp_path):
    bad_header = tmp_path / "header.tsv"
    bad_header.write_text("TRACK\tPATH\n" + FIXTURE_ROWS[0] + "\n")
    with pytest.raises(ValueError, match=r"header\.tsv: line 1: header"):
        read_split(str(bad_header))
    with pytest.raises(FileNotFoundError, match="absent.tsv"):
        read_split(str(tmp_path / "absent.tsv"))
    (tmp_path / "empty.tsv").write_text("")
    with pytest.raises(ValueError, match="empty file"):
        read_split(str(tmp_path / "empty.tsv"))


def test_parse_split_accepts_lines():
    tracks = parse_split([HEADER + "\n", FIXTURE_ROWS[0] + "\r\n", "\n"])
    np.testing.assert_array_equal(label_matrix(tracks), hand_built_matrix()[:1])


def test_write_labels_and_cli(tmp_path, capsys):
    tsv = write_tsv(tmp_path / "split.tsv", FIXTURE_ROWS)
    out = tmp_path / "Y.npy"
    assert cli_main(["labels", "--tsv", str(tsv), "-o", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out, allow_pickle=False), hand_built_matrix())
    ids = (tmp_path / "Y.track_ids.txt").read_text().split()
    assert ids == ["track_0000010", "track_0000011", "track_0000020"]
    assert "3 tracks x 56 tags, 6 positives" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]

    bad = write_tsv(tmp_path / "bad.tsv", [BAD_ROWS["no mood/theme tag"]])
    assert cli_main(["labels", "--tsv", str(bad), "-o", str(tmp_path / "Z.npy")]) == 2
    assert "bad.tsv: line 2: no mood/theme tag" in capsys.readouterr().err
    assert not (tmp_path / "Z.npy").exists()


def test_write_labels_returns_paths(tmp_path):
    tsv = write_tsv(tmp_path / "split.tsv", FIXTURE_ROWS)
    paths = write_labels(str(tsv), str(tmp_path / "y.npy"))
    assert paths == (str(tmp_path / "y.npy"), str(tmp_path / "y.track_ids.txt"))


# ---- the real MTG-Jamendo excerpts (read in place, never copied)


def reference_or_skip(name: str) -> Path:
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"MTG-Jamendo reference metadata not found at {path}")
    return path


def official_matrix(tsv: Path, tag_order: Path) -> np.ndarray:
    """The ground truth as MTG-Jamendo's generate_matrix.py builds it (csv module, dict of tracks)."""
    columns = {line.strip(): i for i, line in enumerate(tag_order.read_text().splitlines())}
    tracks = {}
    with open(tsv, newline="") as handle:
        reader = csv.reader(handle, delimiter="\t")
        next(reader)
        for row in reader:
            tracks[row[0]] = [tag for tag in row[5:] if tag.startswith("mood/theme---")]
    matrix = np.zeros((len(tracks), len(columns)), dtype=bool)
    for i, tags in enumerate(tracks.values()):
        for tag in tags:
            matrix[i, columns[tag]] = True
    return matrix


def test_tag_order_is_the_official_one():
    order = reference_or_skip("moodtheme_split.txt").read_text().split()
    assert order == [f"mood/theme---{tag}" for tag in MOODTHEME_TAGS]


@pytest.mark.parametrize("split", ["validation", "test"])
def test_reference_excerpts_match_official_construction(split):
    tsv = reference_or_skip(f"autotagging_moodtheme-{split}.excerpt.tsv")
    _, labels = read_labels(str(tsv))
    expected = official_matrix(tsv, reference_or_skip("moodtheme_split.txt"))
    assert labels.shape[0] > 10 and labels.sum() > labels.shape[0]
    np.testing.assert_array_equal(labels, expected)


def test_reference_train_excerpt_repeats_a_track():
    # Its line 17 repeats line 13; the official script would silently keep one of them.
    tsv = reference_or_skip("autotagging_moodtheme-train.excerpt.tsv")
    with pytest.raises(ValueError, match=r"line 17: duplicate TRACK_ID track_0005634"):
        read_split(str(tsv))
