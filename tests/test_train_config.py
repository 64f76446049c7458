"""The typed config loader (tfmood.train.config): YAML 1.1's strings read as numbers, unknown
fields and wrong types refused with the file and the line, overrides, round trips, and the
training and search configs read through it."""

import dataclasses
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from tfmood.train.config import (
    coerce,
    field_types,
    load_config,
    parse_text,
    read_yaml_entries,
    save_config,
)
from tfmood.train.fit import TrainConfig

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Example:
    rate: float = 0.5
    count: int = 3
    name: str = "x"
    flag: bool = False
    limit: Optional[int] = None
    sizes: Tuple[int, ...] = (1, 2)
    choices: List[float] = dataclasses.field(default_factory=lambda: [0.5])

    def __post_init__(self):
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


def write(tmp_path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_exponent_without_a_dot_is_read_as_a_float(tmp_path):
    # PyYAML (YAML 1.1) reads 1e-4 as the string '1e-4'; the config wants a float.
    path = write(tmp_path, "rate: 1e-4\n")
    assert read_yaml_entries(path) == [("rate", "1e-4", 1)]
    config = load_config(Example, path)
    assert config.rate == 1e-4 and type(config.rate) is float
    learning = load_config(TrainConfig, write(tmp_path, "learning_rate: 3e-4\n", "t.yaml"))
    assert learning.learning_rate == 3e-4 and type(learning.learning_rate) is float


def test_ints_for_floats_and_numbers_in_lists_are_converted(tmp_path):
    path = write(tmp_path, "rate: 2\ncount: 1e3\nsizes: [4, 5]\nchoices: [1, 2e-1]\nlimit: 7\n")
    config = load_config(Example, path)
    assert config.rate == 2.0 and type(config.rate) is float
    assert config.count == 1000 and type(config.count) is int
    assert config.sizes == (4, 5) and config.choices == [1.0, 0.2]
    assert all(type(value) is float for value in config.choices)
    assert config.limit == 7


def test_unknown_field_is_refused_with_the_file_and_line(tmp_path):
    path = write(tmp_path, "# a comment\nrate: 0.1\n\ncuont: 4\n")
    with pytest.raises(ValueError) as error:
        load_config(Example, path)
    message = str(error.value)
    assert message.startswith(f"{path}:4: unknown config field 'cuont'")
    assert "did you mean 'count'" in message


def test_repeated_field_is_refused_with_both_lines(tmp_path):
    path = write(tmp_path, "count: 1\nrate: 0.1\ncount: 2\n")
    with pytest.raises(ValueError, match=r":3: count given twice \(first on line 1\)"):
        load_config(Example, path)


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("name: y\ncount: ten\n", 2, "count must be int, got 'ten'"),
        ("count: 2.5\n", 1, "count must be int, got 2.5"),
        ("flag: maybe\n", 1, "flag must be bool, got 'maybe'"),
        ("rate: fast\n", 1, "rate must be float, got 'fast'"),
        ("rate: true\n", 1, "rate must be float, got True"),
        ("name: 12\n", 1, "name must be str, got 12"),
        ("x: 1\nlimit: many\n", None, "unknown config field 'x'"),
        ("limit: many\n", 1, "limit must be int or null, got 'many'"),
        ("sizes: [1, a]\n", 1, "sizes[1] must be int, got 'a'"),
    ],
)
def test_wrong_type_is_refused_with_the_file_and_line(tmp_path, text, line, message):
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as error:
        load_config(Example, path)
    if line is not None:
        assert str(error.value).startswith(f"{path}:{line}: ")
    assert message in str(error.value)


def test_the_configs_own_checks_name_the_file_and_line(tmp_path):
    path = write(tmp_path, "rate: 0.1\ncount: -1\n")
    with pytest.raises(ValueError, match=rf"^{path}:2: count must be >= 0, got -1$"):
        load_config(Example, path)
    path = write(tmp_path, "preset: sa3\nstrategy: everywhere\n", "t.yaml")
    with pytest.raises(ValueError, match=rf"^{path}:2: strategy must be one of"):
        load_config(TrainConfig, path)


def test_missing_file_non_mapping_and_bad_yaml(tmp_path):
    missing = str(tmp_path / "nowhere.yaml")
    with pytest.raises(FileNotFoundError, match=f"{missing}: no such config file"):
        load_config(Example, missing)
    listed = write(tmp_path, "- rate\n- count\n")
    with pytest.raises(ValueError, match=f"{listed}:1: a config must be a mapping .* got a list"):
        load_config(Example, listed)
    scalar = write(tmp_path, "just words\n", "scalar.yaml")
    with pytest.raises(ValueError, match="a config must be a mapping .* got a single value"):
        load_config(Example, scalar)
    broken = write(tmp_path, "rate: 0.1\ncount: [1, 2\n", "broken.yaml")
    with pytest.raises(ValueError, match=f"{broken}:3: not valid YAML"):
        load_config(Example, broken)
    assert load_config(Example, write(tmp_path, "# nothing\n", "empty.yaml")) == Example()


def test_overrides_win_none_means_not_given_and_are_checked(tmp_path):
    path = write(tmp_path, "rate: 1e-4\ncount: 5\nname: file\n")
    config = load_config(Example, path, count=9, name=None, rate="2e-3", sizes=[3])
    assert (config.count, config.name, config.rate, config.sizes) == (9, "file", 2e-3, (3,))
    with pytest.raises(ValueError, match="unknown config field 'rat' .*did you mean 'rate'"):
        load_config(Example, path, rat=1.0)
    with pytest.raises(ValueError, match="count must be int, got 'many'"):
        load_config(Example, path, count="many")
    with pytest.raises(ValueError, match=f"^{path}: count must be >= 0"):
        load_config(Example, path, count=-2)  # not the file's line: the override set it


def test_save_and_load_round_trip(tmp_path):
    config = Example(rate=1e-4, count=0, name="a: b", flag=True, limit=None, sizes=(7, 8),
                     choices=[0.25, 1.0])  # fmt: skip
    path = str(tmp_path / "out" / "config.yaml")
    save_config(config, path)
    assert load_config(Example, path) == config
    assert not [p for p in (tmp_path / "out").iterdir() if p.name != "config.yaml"]  # no temp
    train = TrainConfig(preset="sa3", width=(0.25, 0.25, 0.5, 1, 1), learning_rate=3e-3,
                        heads=4, out_dir=str(tmp_path))  # fmt: skip
    save_config(train, str(tmp_path / "train.yaml"))
    assert load_config(TrainConfig, str(tmp_path / "train.yaml")) == train


def test_field_types_coerce_and_command_line_text():
    types = field_types(Example)
    assert list(types) == ["rate", "count", "name", "flag", "limit", "sizes", "choices"]
    assert coerce(types["limit"], None, "limit") is None
    assert coerce(types["sizes"], 4, "sizes") == (4,)  # one value: a list of one
    assert parse_text(types["flag"], "Off") is False and parse_text(types["flag"], "YES") is True
    assert parse_text(types["rate"], "1e-4") == 1e-4 and parse_text(types["limit"], "3") == 3
    with pytest.raises(ValueError, match="expected true or false"):
        parse_text(types["flag"], "perhaps")
    with pytest.raises(TypeError, match="not a dataclass"):
        field_types(dict)


def test_search_config_with_an_exponent_learning_rate_gets_a_float(tmp_path):
    from tfmood.train.search import SearchConfig

    path = write(tmp_path, "learning_rate: 1e-4\nwidths: [1]\nheads: [0, 4]\nepochs: 3\n")
    config = load_config(SearchConfig, path)
    assert config.learning_rate == 1e-4 and type(config.learning_rate) is float
    assert config.widths == [1.0] and config.heads == [0, 4] and config.epochs == 3
    assert SearchConfig.from_yaml(path) == config
    bad = write(tmp_path, "tuner: random\nmax_trial: 3\n", "bad.yaml")
    with pytest.raises(ValueError, match=f"{bad}:2: unknown config field 'max_trial'"):
        load_config(SearchConfig, bad)


def test_search_reuses_the_training_fields():
    from tfmood.train.fit import FitSettings
    from tfmood.train.search import SearchConfig

    shared = set(field_types(FitSettings))
    assert {"train_tsv", "batch_size", "learning_rate", "epochs", "n_frames"} <= shared
    assert shared <= set(field_types(SearchConfig)) and shared <= set(field_types(TrainConfig))
    # The shipped search config, unchanged, gives a training config of its data fields.
    search = load_config(SearchConfig, str(REPO / "training" / "configs" / "search.yaml"))
    train = search.train_config()
    assert isinstance(train, TrainConfig)
    assert (train.train_tsv, train.batch_size, train.n_frames) == (
        "data/autotagging_moodtheme-train.tsv", 16, 1400)  # fmt: skip
    assert train.learning_rate == search.learning_rate == 1e-4
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        SearchConfig(batch_size=0)


def test_search_command_line_overrides_are_typed(tmp_path):
    from tfmood.cli import build_parser
    from tfmood.cli.search import search_overrides_of

    args = build_parser().parse_args(
        ["search", "--config", "c.yaml", "--max-gflops", "3", "--max-trials", "4"]
    )
    overrides = search_overrides_of(args)
    assert overrides == {"max_gflops": 3.0, "max_trials": 4}
    assert type(overrides["max_gflops"]) is float
