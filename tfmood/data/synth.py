"""The synthetic mood corpus: music-like audio whose mood/theme tags follow from how it was made.

No real data set can be downloaded everywhere tfmood runs, so the tests, the demo and a first run
use this corpus. Every track is drawn as a set of musical parameters (`TrackParams`), rendered with
numpy (melody, chords and bass from band-limited wavetables, drums from noise bursts, background
noise) and tagged by the rules below. The corpus is written in the MTG-Jamendo layout
(`audio/NN/N.wav`, split TSVs `autotagging_moodtheme-{train,validation,test}.tsv`), so every reader
of the real data set reads it unchanged, plus `synth.json` with the parameters and tags of every
track.

Parameters and what they do to the audio (and so to a 96-band log-mel spectrogram):

| parameter    | values               | sound                                                      |
|--------------|----------------------|------------------------------------------------------------|
| key          | C .. B               | transposes everything (a nuisance: no tag depends on it)   |
| mode         | major, minor, dorian | scale and chord qualities (major or minor thirds, sixths)  |
| tempo, bpm   | slow, medium, fast   | 60-85, 95-120 or 135-170 BPM: note and drum onsets on an   |
|              |                      | eighth-note grid                                           |
| register     | low, mid, high       | melody tonic near C3 / C4 / C5, chords and bass below it   |
| loudness     | soft, loud           | RMS (level_db) -32..-24 dBFS with slow +-4 dB swells, or   |
|              |                      | -16..-11 dBFS with softly saturated peaks                  |
| timbre       | pure, mellow, bright | sine; odd partials 1/k^2 (triangle-like); all partials 1/k |
|              |                      | (saw-like)                                                 |
| articulation | legato, staccato     | 60 ms attack, held notes; or 4 ms attack, 0.18 s decay,    |
|              |                      | notes struck on eighths                                    |
| percussion   | none, light, full    | none; kick on 1 and quarter hats; kick on 1 and 3, snare   |
|              |                      | on 2 and 4, eighth hats                                    |
| noise        | clean, ambient       | white noise 50-60 dB below the music, or pink noise 9-16   |
|              |                      | dB below it with slow swells (wind, surf)                  |

A hidden arousal level (low/mid/high, not recorded) makes tempo, loudness, percussion, articulation
and noise co-vary as they do in real music; mode, register and timbre are independent of it.
Parameters are redrawn until the rules give 2 to 5 tags (`MIN_TAGS`, `MAX_TAGS`).

Tag rules ("minorish" = minor or dorian; the last column is the exact share of tracks carrying the
tag before label noise, `tag_prevalence`):

| tag          | conditions (all must hold)                                         | % of tracks |
|--------------|--------------------------------------------------------------------|-------------|
| sad          | mode=minor, tempo=slow, loudness=soft                              | 10.6        |
| calm         | mode=major, tempo=slow, loudness=soft                              | 10.3        |
| melancholic  | mode=minorish, tempo=medium, loudness=soft                         | 10.6        |
| relaxing     | tempo=slow, timbre=mellow, percussion=none                         | 5.1         |
| meditative   | tempo=slow, timbre=pure, percussion=none                           | 5.2         |
| slow         | tempo=slow, articulation=legato, percussion=light                  | 8.2         |
| soft         | tempo=medium/fast, loudness=soft, percussion=none                  | 8.6         |
| deep         | register=low, loudness=soft, articulation=legato                   | 11.7        |
| ballad       | tempo=slow, register=mid, percussion=light                         | 4.0         |
| melodic      | register=mid, timbre=mellow, articulation=legato                   | 6.3         |
| background   | tempo=medium, loudness=soft, percussion=light                      | 8.1         |
| romantic     | mode=major, tempo=slow, register=mid                               | 5.2         |
| love         | mode=major, tempo=slow, timbre=mellow                              | 4.1         |
| hopeful      | mode=major, tempo=slow, loudness=loud                              | 5.8         |
| emotional    | mode=minor, tempo=slow, loudness=loud                              | 4.6         |
| sexy         | mode=dorian, tempo=slow                                            | 6.3         |
| cool         | mode=dorian, tempo=medium                                          | 5.9         |
| groovy       | mode=dorian, percussion=full                                       | 5.5         |
| energetic    | tempo=fast, loudness=loud, percussion=light/full                   | 12.0        |
| fast         | tempo=fast, articulation=staccato, percussion=full                 | 9.5         |
| upbeat       | tempo=fast, articulation=staccato, percussion=light                | 3.8         |
| party        | mode=major, tempo=fast, loudness=loud                              | 4.2         |
| powerful     | loudness=loud, timbre=bright, percussion=full                      | 4.4         |
| action       | mode=minorish, tempo=fast, percussion=full                         | 9.7         |
| sport        | tempo=fast, timbre=bright, articulation=staccato                   | 4.7         |
| adventure    | tempo=fast, articulation=legato, percussion=full                   | 4.2         |
| travel       | mode=major, tempo=fast, articulation=legato                        | 4.8         |
| dark         | mode=minorish, register=low, timbre=mellow/bright                  | 12.3        |
| heavy        | mode=minorish, register=low, loudness=loud                         | 8.1         |
| trailer      | register=low, loudness=loud, percussion=full                       | 4.3         |
| film         | mode=minorish, articulation=legato, percussion=none                | 11.4        |
| movie        | loudness=loud, articulation=legato, percussion=none                | 5.5         |
| dramatic     | mode=minor, loudness=loud, percussion=none                         | 3.5         |
| drama        | mode=minor, tempo=medium, articulation=legato                      | 7.9         |
| epic         | mode=minorish, loudness=loud, articulation=legato, percussion=full | 4.6         |
| happy        | mode=major, tempo=fast, percussion=light/full                      | 6.5         |
| children     | mode=major, register=high, timbre=pure/mellow                      | 6.0         |
| fun          | mode=major, timbre=mellow, articulation=staccato                   | 5.8         |
| holiday      | mode=major, register=high, percussion=light/full                   | 5.1         |
| funny        | mode=major, timbre=pure, articulation=staccato                     | 6.0         |
| game         | register=high, timbre=bright, articulation=staccato                | 4.4         |
| retro        | tempo=medium, timbre=bright, articulation=staccato                 | 4.6         |
| uplifting    | mode=major, register=high, articulation=legato                     | 6.4         |
| positive     | mode=major, tempo=medium, loudness=soft                            | 7.0         |
| inspiring    | mode=major, tempo=medium, loudness=loud                            | 7.0         |
| motivational | mode=major, tempo=medium, percussion=full                          | 4.4         |
| summer       | mode=major, tempo=medium, timbre=bright                            | 3.6         |
| advertising  | mode=major, tempo=medium, articulation=staccato                    | 4.9         |
| commercial   | mode=major, articulation=staccato, percussion=light                | 3.8         |
| corporate    | tempo=medium, loudness=loud, percussion=light                      | 7.4         |
| documentary  | tempo=medium, noise=ambient                                        | 4.6         |
| space        | register=high, noise=ambient                                       | 5.1         |
| dream        | mode=major, loudness=soft, noise=ambient                           | 3.5         |
| soundscape   | percussion=none, noise=ambient                                     | 6.9         |
| nature       | timbre=pure, noise=ambient                                         | 5.5         |

"christmas" has no rule and is never produced; `PRODUCIBLE_TAGS` lists the other 55. Label noise:
each rule tag is, with probability `label_noise` (default 0.05), replaced by a tag drawn uniformly
from the producible tags the track does not carry, as annotators sometimes pick a neighbour.

Splits (70/15/15 by default, exact sizes, `stratified_split`): tags are placed from the rarest to
the most common, each track going first to a split without a positive of its tag, then swaps between
splits fill remaining gaps. A tag is *in use* when it has a positive and a negative in every split
(so per-tag ROC-AUC is defined on each split); other tags are removed from every track. In small
corpora a few common tags are first made usable everywhere by redrawing single tracks, and a track
left without a tag is redrawn in its split. The tags in use are `CorpusInfo.tags` and the "tags" of
synth.json (`corpus_tags`): evaluate on those. Measured over 400 seeds each: at 300, 400 and 600
tracks all 55 producible tags are in use for every seed; at 150 tracks about 54 (at least 49); at 60
about 18; at 20 (the smallest corpus accepted with the default fractions) at least 3 and about 5
on average, with about 8 of the 20 tracks redrawn.
"""

from __future__ import annotations

import functools
import itertools
import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import soundfile as sf

from tfmood import atomic
from tfmood.data.tags import MOODTHEME_TAGS, PREFIX, TAG_INDEX

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.70, 0.15, 0.15)
DEFAULT_LABEL_NOISE = 0.05
SAMPLE_RATE = 12000
TSV_HEADER = ("TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS")
MIN_TAGS, MAX_TAGS = 2, 5
# A split needs a positive and a negative of every tag in use.
MIN_SPLIT_SIZE = 3

KEY_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = ("major", "minor", "dorian")
TEMPOS = ("slow", "medium", "fast")
REGISTERS = ("low", "mid", "high")
LOUDNESSES = ("soft", "loud")
TIMBRES = ("pure", "mellow", "bright")
ARTICULATIONS = ("legato", "staccato")
PERCUSSIONS = ("none", "light", "full")
NOISES = ("clean", "ambient")

SCALES = {
    "major": (0, 2, 4, 5, 7, 9, 11),
    "minor": (0, 2, 3, 5, 7, 8, 10),
    "dorian": (0, 2, 3, 5, 7, 9, 10),
}
# Chord roots as scale degrees, one chord per bar; triads are stacked thirds of the mode's scale.
PROGRESSIONS = {
    "major": ((0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 3, 4)),
    "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 5, 3, 4)),
    "dorian": ((0, 3, 0, 3), (0, 1, 0, 3), (0, 3, 1, 0)),
}
BPM_RANGES = {"slow": (60.0, 85.0), "medium": (95.0, 120.0), "fast": (135.0, 170.0)}
MAX_PARTIALS = 40
# Tonic of the melody in C (MIDI C3, C4, C5); the key moves it by -6..+5 semitones.
MELODY_ROOTS = {"low": 48, "mid": 60, "high": 72}
LOWEST_BASS = 28  # MIDI E1, 41 Hz
LEVEL_RANGES_DB = {"soft": (-32.0, -24.0), "loud": (-16.0, -11.0)}
NOISE_RANGES_DB = {"clean": (-60.0, -50.0), "ambient": (-16.0, -9.0)}

# Hidden arousal (low, mid, high) -> probabilities of the observable parameters.
P_TEMPO_MATCHES_AROUSAL = 0.7
P_LOUD = (0.2, 0.5, 0.8)
P_PERCUSSION = ((0.6, 0.3, 0.1), (0.2, 0.5, 0.3), (0.1, 0.2, 0.7))
P_STACCATO = (0.25, 0.5, 0.7)
P_AMBIENT = (0.4, 0.2, 0.1)
P_MODE = (0.45, 0.40, 0.15)

MINORISH = ("minor", "dorian")


@dataclass(frozen=True)
class TrackParams:
    """The musical parameters of one synthetic track (see the module table).

    Args:
        key: tonic, one of KEY_NAMES.
        mode: major, minor or dorian.
        progression: index of the chord progression of the mode in PROGRESSIONS.
        tempo: slow, medium or fast.
        bpm: beats per minute, inside the tempo's range.
        register: low, mid or high.
        loudness: soft or loud.
        level_db: target RMS of the music in dBFS.
        timbre: pure, mellow or bright.
        articulation: legato or staccato.
        percussion: none, light or full.
        noise: clean or ambient.
        noise_db: background noise RMS relative to the music, in dB.
    """

    key: str
    mode: str
    progression: int
    tempo: str
    bpm: float
    register: str
    loudness: str
    level_db: float
    timbre: str
    articulation: str
    percussion: str
    noise: str
    noise_db: float

    def to_dict(self) -> Dict[str, object]:
        """The parameters as a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class TagRule:
    """A tag and the parameter values it requires (every listed field must take a listed value).

    Args:
        tag: a mood/theme tag name from tfmood.data.tags.
        conditions: field name of TrackParams -> the accepted values.
    """

    tag: str
    conditions: Mapping[str, Tuple[str, ...]]

    def matches(self, params: TrackParams) -> bool:
        """Whether `params` meets every condition."""
        return all(getattr(params, name) in values for name, values in self.conditions.items())


def _rule(tag: str, **conditions) -> TagRule:
    as_tuples = {k: (v,) if isinstance(v, str) else tuple(v) for k, v in conditions.items()}
    return TagRule(tag, as_tuples)


TAG_RULES: Tuple[TagRule, ...] = (
    # quiet and slow
    _rule("sad", mode="minor", tempo="slow", loudness="soft"),
    _rule("calm", mode="major", tempo="slow", loudness="soft"),
    _rule("melancholic", mode=MINORISH, tempo="medium", loudness="soft"),
    _rule("relaxing", tempo="slow", timbre="mellow", percussion="none"),
    _rule("meditative", tempo="slow", timbre="pure", percussion="none"),
    _rule("slow", tempo="slow", articulation="legato", percussion="light"),
    _rule("soft", tempo=("medium", "fast"), loudness="soft", percussion="none"),
    _rule("deep", register="low", loudness="soft", articulation="legato"),
    _rule("ballad", tempo="slow", register="mid", percussion="light"),
    _rule("melodic", register="mid", timbre="mellow", articulation="legato"),
    _rule("background", tempo="medium", loudness="soft", percussion="light"),
    # slow and warm
    _rule("romantic", mode="major", tempo="slow", register="mid"),
    _rule("love", mode="major", tempo="slow", timbre="mellow"),
    _rule("hopeful", mode="major", tempo="slow", loudness="loud"),
    _rule("emotional", mode="minor", tempo="slow", loudness="loud"),
    # dorian colour
    _rule("sexy", mode="dorian", tempo="slow"),
    _rule("cool", mode="dorian", tempo="medium"),
    _rule("groovy", mode="dorian", percussion="full"),
    # fast and loud
    _rule("energetic", tempo="fast", loudness="loud", percussion=("light", "full")),
    _rule("fast", tempo="fast", articulation="staccato", percussion="full"),
    _rule("upbeat", tempo="fast", articulation="staccato", percussion="light"),
    _rule("party", mode="major", tempo="fast", loudness="loud"),
    _rule("powerful", loudness="loud", timbre="bright", percussion="full"),
    _rule("action", mode=MINORISH, tempo="fast", percussion="full"),
    _rule("sport", tempo="fast", timbre="bright", articulation="staccato"),
    _rule("adventure", tempo="fast", articulation="legato", percussion="full"),
    _rule("travel", mode="major", tempo="fast", articulation="legato"),
    # low and minor
    _rule("dark", mode=MINORISH, register="low", timbre=("mellow", "bright")),
    _rule("heavy", mode=MINORISH, register="low", loudness="loud"),
    _rule("trailer", register="low", loudness="loud", percussion="full"),
    # cinematic
    _rule("film", mode=MINORISH, articulation="legato", percussion="none"),
    _rule("movie", loudness="loud", articulation="legato", percussion="none"),
    _rule("dramatic", mode="minor", loudness="loud", percussion="none"),
    _rule("drama", mode="minor", tempo="medium", articulation="legato"),
    _rule("epic", mode=MINORISH, loudness="loud", articulation="legato", percussion="full"),
    # bright, major and high
    _rule("happy", mode="major", tempo="fast", percussion=("light", "full")),
    _rule("children", mode="major", register="high", timbre=("pure", "mellow")),
    _rule("fun", mode="major", timbre="mellow", articulation="staccato"),
    _rule("holiday", mode="major", register="high", percussion=("light", "full")),
    _rule("funny", mode="major", timbre="pure", articulation="staccato"),
    _rule("game", register="high", timbre="bright", articulation="staccato"),
    _rule("retro", tempo="medium", timbre="bright", articulation="staccato"),
    _rule("uplifting", mode="major", register="high", articulation="legato"),
    _rule("positive", mode="major", tempo="medium", loudness="soft"),
    _rule("inspiring", mode="major", tempo="medium", loudness="loud"),
    _rule("motivational", mode="major", tempo="medium", percussion="full"),
    _rule("summer", mode="major", tempo="medium", timbre="bright"),
    _rule("advertising", mode="major", tempo="medium", articulation="staccato"),
    _rule("commercial", mode="major", articulation="staccato", percussion="light"),
    _rule("corporate", tempo="medium", loudness="loud", percussion="light"),
    # ambient noise
    _rule("documentary", tempo="medium", noise="ambient"),
    _rule("space", register="high", noise="ambient"),
    _rule("dream", mode="major", loudness="soft", noise="ambient"),
    _rule("soundscape", percussion="none", noise="ambient"),
    _rule("nature", timbre="pure", noise="ambient"),
)  # fmt: skip

# Tags with a rule, in the official order.
PRODUCIBLE_TAGS: Tuple[str, ...] = tuple(
    tag for tag in MOODTHEME_TAGS if tag in {rule.tag for rule in TAG_RULES}
)


@dataclass(frozen=True)
class CorpusInfo:
    """What `generate_corpus` wrote.

    Args:
        out_dir: the corpus root.
        audio_dir: `out_dir/audio`, the root the TSV PATH column is relative to.
        split_paths: split name -> TSV path.
        metadata_path: `out_dir/synth.json`.
        split_counts: split name -> number of tracks.
        tags: the tags in use (each has a positive and a negative in every split), official order.
        removed_tags: tags removed from every track because some split lacked a positive or a
            negative.
        redrawn_tracks: tracks redrawn in small corpora so that every split keeps a few tags.
    """

    out_dir: str
    audio_dir: str
    split_paths: Dict[str, str]
    metadata_path: str
    split_counts: Dict[str, int]
    tags: Tuple[str, ...]
    removed_tags: Tuple[str, ...] = ()
    redrawn_tracks: int = 0

    @property
    def n_tracks(self) -> int:
        """Tracks written, all splits together."""
        return sum(self.split_counts.values())


# --------------------------------------------------------------------------- parameters and tags


def _pick(rng: np.random.Generator, probabilities: Sequence[float]) -> int:
    """Index drawn with the given probabilities (one uniform number, cheaper than rng.choice)."""
    return int(np.searchsorted(np.cumsum(probabilities), rng.random(), side="right"))


def _draw_params(rng: np.random.Generator) -> TrackParams:
    """One unconditioned draw of the parameters (hidden arousal first)."""
    arousal = int(rng.integers(3))
    tempo_index = arousal
    if rng.random() >= P_TEMPO_MATCHES_AROUSAL:
        tempo_index = (arousal + 1 + int(rng.integers(2))) % 3
    tempo = TEMPOS[tempo_index]
    mode = MODES[_pick(rng, P_MODE)]
    loudness = "loud" if rng.random() < P_LOUD[arousal] else "soft"
    noise = "ambient" if rng.random() < P_AMBIENT[arousal] else "clean"
    return TrackParams(
        key=KEY_NAMES[int(rng.integers(12))],
        mode=mode,
        progression=int(rng.integers(len(PROGRESSIONS[mode]))),
        tempo=tempo,
        bpm=round(float(rng.uniform(*BPM_RANGES[tempo])), 2),
        register=REGISTERS[int(rng.integers(3))],
        loudness=loudness,
        level_db=round(float(rng.uniform(*LEVEL_RANGES_DB[loudness])), 2),
        timbre=TIMBRES[int(rng.integers(3))],
        articulation="staccato" if rng.random() < P_STACCATO[arousal] else "legato",
        percussion=PERCUSSIONS[_pick(rng, P_PERCUSSION[arousal])],
        noise=noise,
        noise_db=round(float(rng.uniform(*NOISE_RANGES_DB[noise])), 2),
    )


def rule_tags(params: TrackParams) -> List[str]:
    """The tags the rules give `params` (no label noise), in the official order.

    Args:
        params: the track parameters.
    """
    return list(_rule_tags_of(tuple(getattr(params, name) for name in RULE_FIELDS)))


# The categorical fields the rules read; rule results are cached per combination (972 of them).
RULE_FIELDS = (
    "mode", "tempo", "register", "loudness", "timbre", "articulation", "percussion", "noise"
)  # fmt: skip


@functools.lru_cache(maxsize=None)
def _rule_tags_of(values: Tuple[str, ...]) -> Tuple[str, ...]:
    fields = dict(zip(RULE_FIELDS, values))
    carried = {
        rule.tag
        for rule in TAG_RULES
        if all(fields[name] in accepted for name, accepted in rule.conditions.items())
    }
    return tuple(tag for tag in MOODTHEME_TAGS if tag in carried)


def sample_track_params(rng: np.random.Generator) -> TrackParams:
    """Draw track parameters, redrawing until the rules give MIN_TAGS..MAX_TAGS tags.

    Args:
        rng: the random generator (consumed).
    """
    while True:
        params = _draw_params(rng)
        if MIN_TAGS <= len(rule_tags(params)) <= MAX_TAGS:
            return params


def tags_for(
    params: TrackParams, rng: np.random.Generator, label_noise: float = DEFAULT_LABEL_NOISE
) -> List[str]:
    """The tags of a track: its rule tags, each replaced with probability `label_noise`.

    A replaced tag becomes one drawn uniformly from the producible tags the track does not carry.

    Args:
        params: the track parameters.
        rng: the random generator (consumed).
        label_noise: probability that a rule tag is replaced, in [0, 1].

    Returns:
        The tag names (no prefix), in the official order, without repeats.
    """
    if not 0.0 <= label_noise <= 1.0:
        raise ValueError(f"label_noise must be in [0, 1], got {label_noise}")
    tags = rule_tags(params)
    flips = rng.random(len(tags)) < label_noise
    kept = [tag for tag, flip in zip(tags, flips) if not flip]
    for _ in range(int(flips.sum())):
        candidates = [tag for tag in PRODUCIBLE_TAGS if tag not in tags and tag not in kept]
        kept.append(candidates[int(rng.integers(len(candidates)))])
    return [tag for tag in MOODTHEME_TAGS if tag in kept]


def _combination_probabilities() -> Dict[Tuple[str, ...], float]:
    """P(categorical fields = combination) for one unconditioned draw, keyed in RULE_FIELDS order.

    Mirrors `_draw_params`: a mixture over the hidden arousal of independent fields.
    """
    totals: Dict[Tuple[str, ...], float] = {}
    for arousal in range(3):
        choices = {
            "mode": dict(zip(MODES, P_MODE)),
            "tempo": {
                t: P_TEMPO_MATCHES_AROUSAL if i == arousal else (1 - P_TEMPO_MATCHES_AROUSAL) / 2
                for i, t in enumerate(TEMPOS)
            },
            "register": dict.fromkeys(REGISTERS, 1 / 3),
            "loudness": {"soft": 1 - P_LOUD[arousal], "loud": P_LOUD[arousal]},
            "timbre": dict.fromkeys(TIMBRES, 1 / 3),
            "articulation": {"legato": 1 - P_STACCATO[arousal], "staccato": P_STACCATO[arousal]},
            "percussion": dict(zip(PERCUSSIONS, P_PERCUSSION[arousal])),
            "noise": {"clean": 1 - P_AMBIENT[arousal], "ambient": P_AMBIENT[arousal]},
        }
        options = [list(choices[name].items()) for name in RULE_FIELDS]
        for combination in itertools.product(*options):
            key = tuple(value for value, _ in combination)
            weight = float(np.prod([p for _, p in combination])) / 3
            totals[key] = totals.get(key, 0.0) + weight
    return totals


@functools.lru_cache(maxsize=1)
def _prevalence() -> Tuple[Tuple[str, float], ...]:
    totals = dict.fromkeys(PRODUCIBLE_TAGS, 0.0)
    accepted = 0.0
    for combination, probability in _combination_probabilities().items():
        tags = _rule_tags_of(combination)
        if MIN_TAGS <= len(tags) <= MAX_TAGS:  # sample_track_params redraws the others
            accepted += probability
            for tag in tags:
                totals[tag] += probability
    return tuple((tag, totals[tag] / accepted) for tag in PRODUCIBLE_TAGS)


def tag_prevalence() -> Dict[str, float]:
    """Exact fraction of tracks carrying each producible tag (rule tags, before label noise).

    Computed by enumerating every combination of the categorical parameters with its
    probability under `sample_track_params` (redraws included).
    """
    return dict(_prevalence())


def frequent_tags(
    n_tracks: int,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    min_expected: float = 1.0,
) -> List[str]:
    """Producible tags expected at least `min_expected` times in the smallest split.

    Use it to choose the tags to evaluate before a corpus exists; a written corpus lists its tags
    in `CorpusInfo.tags` and synth.json (see `corpus_tags`).

    Args:
        n_tracks: corpus size.
        fractions: the split fractions.
        min_expected: the expected positives required in the smallest split.
    """
    smallest = n_tracks * min(fractions)
    return [tag for tag, p in tag_prevalence().items() if p * smallest >= min_expected]


# --------------------------------------------------------------------------------------- audio


def _midi_to_hz(midi: np.ndarray) -> np.ndarray:
    return 440.0 * 2.0 ** ((np.asarray(midi, dtype=np.float64) - 69.0) / 12.0)


def _degrees_to_midi(degrees: np.ndarray, mode: str, root: int) -> np.ndarray:
    """Scale degrees (any integer, 7 per octave) -> MIDI notes above `root`."""
    scale = np.asarray(SCALES[mode])
    degrees = np.asarray(degrees)
    return root + scale[degrees % 7] + 12 * (degrees // 7)


@functools.lru_cache(maxsize=64)
def _wavetable(timbre: str, n_partials: int, size: int = 2048) -> np.ndarray:
    """One band-limited cycle: sine (pure), odd partials 1/k^2 (mellow) or all 1/k (bright)."""
    k = np.arange(1, max(1, n_partials) + 1)
    if timbre == "pure":
        amplitudes = np.where(k == 1, 1.0, np.where(k == 2, 0.08, 0.0))
    elif timbre == "mellow":
        amplitudes = np.where(k % 2 == 1, 1.0 / k**2, 0.0) + np.where(k % 2 == 0, 0.02 / k, 0.0)
    else:
        amplitudes = 1.0 / k
    phase = np.arange(size) / size
    table = np.sin(2 * np.pi * np.outer(phase, k)) @ amplitudes
    return (table / np.max(np.abs(table))).astype(np.float32)


@dataclass(frozen=True)
class _Notes:
    """Monophonic note events: onsets (samples, increasing, first 0), lengths, MIDI, velocity."""

    onsets: np.ndarray
    lengths: np.ndarray
    midi: np.ndarray
    velocity: np.ndarray


def _render_voice(
    notes: _Notes, n: int, sample_rate: int, table: np.ndarray, attack: float, decay: float
) -> np.ndarray:
    """Wavetable synthesis of note events with attack / exponential decay / release.

    `notes.midi` may hold one row per voice (a chord): the voices share onsets and envelope.
    Every note starts at phase 0 (its attack hides the reset), so the phase is the time since the
    onset times the frequency: no running sum, and float32 stays exact enough.
    """
    segments = np.diff(np.append(notes.onsets, n))
    onset = np.repeat(notes.onsets.astype(np.float32), segments)
    elapsed = np.arange(n, dtype=np.float32) - onset  # samples since the note's onset
    tone = np.zeros(n, dtype=np.float32)
    for midi in np.atleast_2d(notes.midi):
        table_steps = (_midi_to_hz(midi) * len(table) / sample_rate).astype(np.float32)
        cycles = elapsed * np.repeat(table_steps, segments)
        tone += table[cycles.astype(np.int32) & (len(table) - 1)]
    envelope = np.minimum(elapsed * np.float32(1.0 / (attack * sample_rate)), 1.0)
    envelope *= np.exp(elapsed * np.float32(-1.0 / (decay * sample_rate)))
    # A 10 ms release before the note's end, scaled by its velocity.
    release = np.float32(1.0 / (0.01 * sample_rate))
    gate = (np.repeat(notes.lengths.astype(np.float32), segments) - elapsed) * release
    np.clip(gate, 0.0, 1.0, out=gate)
    gate *= np.repeat(notes.velocity.astype(np.float32), segments)
    return tone * envelope * gate


def _events(onsets: np.ndarray, n: int, hold: float, midi, velocity) -> _Notes:
    """Notes starting at `onsets` (samples) that last `hold` of the gap to the next one.

    `midi` is (notes,) or (voices, notes); `velocity` is (notes,).
    """
    onsets = np.asarray(onsets, dtype=np.int64)
    keep = onsets < n
    onsets, midi = onsets[keep], np.asarray(midi)[..., keep]
    velocity = np.asarray(velocity)[keep]
    if onsets[0] > 0:  # a silent lead-in note keeps every sample assigned to an event
        onsets = np.insert(onsets, 0, 0)
        midi = np.insert(midi, 0, midi[..., 0], axis=-1)
        velocity = np.insert(velocity, 0, 0.0)
    gaps = np.diff(np.append(onsets, n))
    return _Notes(onsets, np.maximum(1, (gaps * hold).astype(np.int64)), midi, velocity)


def _grid(params: TrackParams, n: int, sample_rate: int) -> Tuple[np.ndarray, np.ndarray]:
    """Eighth-note step onsets (samples) and each step's chord root (scale degree)."""
    step_seconds = 30.0 / params.bpm
    n_steps = int(np.ceil(n / (step_seconds * sample_rate))) + 1
    steps = np.arange(n_steps)
    onsets = np.round(steps * step_seconds * sample_rate).astype(np.int64)
    progression = np.asarray(PROGRESSIONS[params.mode][params.progression])
    return onsets, progression[(steps // 8) % len(progression)]


def _melody(params, onsets, roots, n, rng, root) -> _Notes:
    """Chord tones on beats, neighbour tones between; legato holds, staccato plucks."""
    on_beat = np.arange(len(onsets)) % 2 == 0
    degree = roots + np.where(
        on_beat, rng.choice([0, 2, 4, 7], len(onsets)), rng.choice([-1, 1, 3, 5], len(onsets))
    )
    if params.articulation == "legato":
        starts, hold = on_beat | (rng.random(len(onsets)) < 0.3), 1.0
    else:
        starts, hold = rng.random(len(onsets)) < 0.85, 0.5
    starts[0] = True
    velocity = rng.uniform(0.8, 1.0, len(onsets))
    midi = _degrees_to_midi(degree, params.mode, root)
    return _events(onsets[starts], n, hold, midi[starts], velocity[starts])


def _chords(params, onsets, roots, n, root) -> _Notes:
    """A triad (three voices): held for a bar (legato) or struck on every beat (staccato)."""
    every = 8 if params.articulation == "legato" else 2
    hold = 1.0 if params.articulation == "legato" else 0.6
    picks = np.arange(0, len(onsets), every)
    triad = roots[picks][None, :] + np.array([0, 2, 4])[:, None]
    midi = _degrees_to_midi(triad, params.mode, root)
    return _events(onsets[picks], n, hold, midi, np.full(len(picks), 0.3))


def _bass(params, onsets, roots, n, root) -> _Notes:
    """The chord root on beats 1 and 3, or on every beat when fast."""
    every = 2 if params.tempo == "fast" else 4
    picks = np.arange(0, len(onsets), every)
    midi = _degrees_to_midi(roots[picks], params.mode, root)
    return _events(onsets[picks], n, 0.9, midi, np.full(len(picks), 0.6))


def _tonal_part(params: TrackParams, n: int, sample_rate: int, rng) -> np.ndarray:
    """Melody, chords and bass in the track's key, mode, register, timbre and articulation."""
    onsets, roots = _grid(params, n, sample_rate)
    melody_root = MELODY_ROOTS[params.register] + (KEY_NAMES.index(params.key) + 6) % 12 - 6
    legato = params.articulation == "legato"
    attack, decay = (0.06, 2.5) if legato else (0.004, 0.18)
    parts = [(_melody(params, onsets, roots, n, rng, melody_root), 1.0)]
    parts.append((_chords(params, onsets, roots, n, melody_root - 12), 1.0))
    bass_gain = 1.5 if params.register == "low" else 1.0
    bass_root = melody_root - 24 + 12 * int(melody_root - 24 < LOWEST_BASS)
    parts.append((_bass(params, onsets, roots, n, bass_root), bass_gain))
    signal = np.zeros(n, dtype=np.float32)
    for notes, gain in parts:
        # Partials stop below Nyquist for the voice's highest note, so nothing aliases.
        top_hz = float(_midi_to_hz(notes.midi.max()))
        table = _wavetable(params.timbre, min(MAX_PARTIALS, int(0.45 * sample_rate / top_hz)))
        signal += np.float32(gain) * _render_voice(notes, n, sample_rate, table, attack, decay)
    return signal


def _drum_templates(sample_rate: int, rng) -> Dict[str, np.ndarray]:
    """Kick (falling sine), snare (noise + tone) and hat (differentiated noise) one-shots."""
    t = np.arange(int(0.25 * sample_rate)) / sample_rate
    kick_phase = 2 * np.pi * (45.0 * t + (120.0 - 45.0) * 0.04 * (1 - np.exp(-t / 0.04)))
    kick = np.sin(kick_phase) * np.exp(-t / 0.08)
    ts = t[: int(0.2 * sample_rate)]
    snare = rng.standard_normal(len(ts)) * np.exp(-ts / 0.05) * 0.6
    snare += np.sin(2 * np.pi * 190.0 * ts) * np.exp(-ts / 0.03) * 0.5
    th = t[: int(0.06 * sample_rate)]
    hat = np.diff(rng.standard_normal(len(th) + 1)) * np.exp(-th / 0.012) * 0.35
    return {"kick": kick, "snare": snare, "hat": hat}


# Eighth-note steps (within a bar of 8) where each drum plays, and its velocity.
DRUM_PATTERNS = {
    "light": {"kick": ((0,), 0.7), "hat": ((0, 2, 4, 6), 0.5)},
    "full": {"kick": ((0, 4), 1.0), "snare": ((2, 6), 0.9), "hat": (tuple(range(8)), 0.6)},
}


def _percussion(params: TrackParams, n: int, sample_rate: int, rng) -> np.ndarray:
    """Drum one-shots placed on the eighth-note grid (zeros when percussion is none)."""
    out = np.zeros(n, dtype=np.float32)
    if params.percussion == "none":
        return out
    onsets, _ = _grid(params, n, sample_rate)
    templates = _drum_templates(sample_rate, rng)
    steps = np.arange(len(onsets)) % 8
    for drum, (positions, velocity) in DRUM_PATTERNS[params.percussion].items():
        hits = onsets[np.isin(steps, positions)]
        gains = velocity * rng.uniform(0.85, 1.0, len(hits))
        index = hits[:, None] + np.arange(len(templates[drum]))[None, :]
        inside = index < n
        hit_audio = (gains[:, None] * templates[drum][None, :]).astype(np.float32)
        np.add.at(out, index[inside], hit_audio[inside])
    return out


def _background(params: TrackParams, n: int, sample_rate: int, rng) -> np.ndarray:
    """Unit-RMS noise: white (clean) or pink with slow random swells (ambient)."""
    # Uniform white noise (cheaper than Gaussian; the pink filter makes it Gaussian-like anyway).
    white = (rng.random(n, dtype=np.float32) - np.float32(0.5)) * np.float32(np.sqrt(12.0))
    if params.noise == "clean":
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(n, 1.0 / sample_rate)
    spectrum /= np.sqrt(np.maximum(freqs, 20.0))
    pink = np.fft.irfft(spectrum, n)
    swell_hz = rng.uniform(0.05, 0.2)
    t = np.arange(n, dtype=np.float32) / np.float32(sample_rate)
    pink *= 1.0 + 0.6 * np.sin(2 * np.pi * swell_hz * t + rng.uniform(0, 2 * np.pi))
    return (pink / np.sqrt(np.mean(pink**2))).astype(np.float32)


def _rms(signal: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(signal, dtype=np.float64)))) + 1e-12


def synthesize_track(
    params: TrackParams, seconds: float, sample_rate: int, rng: np.random.Generator
) -> np.ndarray:
    """Render one track.

    Args:
        params: the track parameters.
        seconds: duration; the output has round(seconds * sample_rate) samples.
        sample_rate: samples per second (tfmood's front-end uses 12000).
        rng: the random generator (consumed).

    Returns:
        float32 mono samples in [-1, 1].
    """
    n = int(round(seconds * sample_rate))
    if n < 1 or sample_rate < 1000:
        raise ValueError(f"need seconds > 0 and sample_rate >= 1000, got {seconds}, {sample_rate}")
    music = _tonal_part(params, n, sample_rate, rng)
    drums = _percussion(params, n, sample_rate, rng)
    if params.percussion != "none":
        drum_db = -3.0 if params.percussion == "full" else -9.0
        music += drums * (_rms(music) / _rms(drums)) * 10 ** (drum_db / 20)
    if params.loudness == "soft":  # slow swells of +-4 dB over four bars
        t = np.arange(n, dtype=np.float32) / np.float32(sample_rate)
        swell_db = 4.0 * np.sin(np.float32(2 * np.pi * params.bpm / 960.0) * t)
        music *= np.exp(swell_db * np.float32(np.log(10.0) / 20.0))
    music *= np.float32(10 ** (params.level_db / 20) / _rms(music))
    noise = _background(params, n, sample_rate, rng)
    music += noise * np.float32(10 ** ((params.level_db + params.noise_db) / 20))
    if np.max(np.abs(music)) > 0.5:  # loud peaks saturate softly instead of clipping
        music = 0.98 * np.tanh(music / np.float32(0.98))
    return music.astype(np.float32)


# --------------------------------------------------------------------------------------- splits


def split_sizes(n_tracks: int, fractions: Sequence[float]) -> List[int]:
    """Tracks per split: the shares of `n_tracks`, rounded by largest remainder (sum = n_tracks).

    Args:
        n_tracks: the corpus size.
        fractions: the share of each split (positive; normalised).
    """
    shares = np.asarray(fractions, dtype=np.float64)
    if shares.ndim != 1 or len(shares) == 0 or np.any(shares <= 0):
        raise ValueError(f"split fractions must be positive, got {list(fractions)}")
    exact = shares / shares.sum() * n_tracks
    sizes = np.floor(exact).astype(np.int64)
    # Stable order, so equal remainders go to the earlier split.
    for index in np.argsort(-(exact - sizes), kind="stable")[: n_tracks - int(sizes.sum())]:
        sizes[index] += 1
    return sizes.tolist()


def stratified_split(
    tag_sets: Sequence[Sequence[str]],
    fractions: Sequence[float],
    rng: np.random.Generator,
) -> List[int]:
    """Assign tracks to splits so that every tag reaches every split where possible.

    Split sizes are fixed first (`split_sizes`). Tags are then taken from the rarest to the most
    common; each unplaced track with the tag goes to a split that is not full, preferring one
    without a positive of that tag yet, then the one furthest below its share of the tag, then the
    one with the most room (iterative stratification, Sechidis et al. 2011). Swaps between splits
    then give a positive to tags still missing from a split (`_swap_for_coverage`).

    Args:
        tag_sets: the tags of each track.
        fractions: the share of each split (normalised).
        rng: the random generator (consumed, for the order within a tag).

    Returns:
        The split index of each track; split k holds exactly split_sizes(...)[k] tracks.
    """
    n = len(tag_sets)
    room = np.asarray(split_sizes(n, fractions), dtype=np.int64)
    shares = room / max(n, 1)
    tags = sorted({tag for tags in tag_sets for tag in tags})
    column = {tag: i for i, tag in enumerate(tags)}
    labels = np.zeros((n, len(tags)), dtype=bool)
    for row, track_tags in enumerate(tag_sets):
        labels[row, [column[tag] for tag in track_tags]] = True
    wanted_tags = shares[:, None] * labels.sum(axis=0)[None, :]
    have = np.zeros((len(room), len(tags)), dtype=np.int64)
    split = np.full(n, -1)
    while np.any(split < 0):
        open_counts = labels[split < 0].sum(axis=0)
        candidates = np.flatnonzero(open_counts > 0)
        if len(candidates) == 0:  # tracks without tags fill the remaining room
            rows = np.flatnonzero(split < 0)
            split[rows] = np.repeat(np.arange(len(room)), room)[: len(rows)]
            break
        tag = candidates[np.argmin(open_counts[candidates])]
        for row in rng.permutation(np.flatnonzero((split < 0) & labels[:, tag])):
            key = np.lexsort((room, wanted_tags[:, tag], have[:, tag] == 0, room > 0))
            chosen = int(key[-1])
            split[row] = chosen
            wanted_tags[chosen] -= labels[row]
            have[chosen] += labels[row]
            room[chosen] -= 1
    _swap_for_coverage(labels, split, have)
    return split.tolist()


def _swap_for_coverage(labels: np.ndarray, split: np.ndarray, have: np.ndarray) -> None:
    """Give tags missing from a split a positive by swapping tracks between splits (in place).

    A carrier of the tag moves in from a split holding two or more of its positives, and a track
    of the lacking split moves out in exchange; neither move takes the last positive of any tag
    from its split, and split sizes do not change.
    """
    for tag in np.argsort(labels.sum(axis=0), kind="stable"):
        for lacking in np.flatnonzero(have[:, tag] == 0):
            for donor in np.flatnonzero(labels[:, tag] & (split != lacking)):
                source = split[donor]
                if have[source, tag] < 2 or np.any(have[source][labels[donor]] < 2):
                    continue
                safe = [
                    row
                    for row in np.flatnonzero(split == lacking)
                    if np.all(have[lacking][labels[row]] >= 2)
                ]
                if not safe:
                    continue
                partner = safe[0]
                have[source] += labels[partner].astype(np.int64) - labels[donor]
                have[lacking] += labels[donor].astype(np.int64) - labels[partner]
                split[donor], split[partner] = lacking, source
                break


# ---------------------------------------------------------------------------------------- files


def _write_wav(path: str, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono WAV, written atomically."""
    pcm = np.round(np.clip(audio, -1.0, 1.0) * 32767.0).astype(np.int16)
    with atomic.temporary_path(path) as temp_path:
        sf.write(temp_path, pcm, sample_rate, subtype="PCM_16", format="WAV")


def track_id(number: int) -> str:
    """MTG-style track id: 1 -> `track_0000001`."""
    return f"track_{number:07d}"


def track_path(number: int) -> str:
    """MTG-style audio path (folder = last two digits): 1 -> `01/1.wav`, 948 -> `48/948.wav`."""
    return f"{number % 100:02d}/{number}.wav"


def _duration_text(seconds: float) -> str:
    """DURATION as MTG-Jamendo writes it (one decimal), with more digits only when needed."""
    seconds = float(seconds)
    return f"{seconds:.1f}" if round(seconds, 1) == seconds else repr(seconds)


def _tsv_text(tracks: Sequence[_Planned], seconds: float) -> str:
    lines = ["\t".join(TSV_HEADER)]
    for track in tracks:
        number = track.number
        cells = [track_id(number), f"artist_{number:06d}", f"album_{number:06d}"]
        cells += [track_path(number), _duration_text(seconds)]
        cells += [PREFIX + tag for tag in track.tags]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def split_tsv_path(out_dir: str, split: str) -> str:
    """`out_dir/autotagging_moodtheme-<split>.tsv`."""
    return os.path.join(out_dir, f"autotagging_moodtheme-{split}.tsv")


def corpus_tags(out_dir: str) -> List[str]:
    """The tags in use in a written corpus (a positive and a negative in every split).

    They are read from the corpus' synth.json.

    Args:
        out_dir: the corpus root.
    """
    path = os.path.join(out_dir, "synth.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no synthetic corpus description")
    with open(path, "r", encoding="utf-8") as handle:
        return list(json.load(handle)["tags"])


# Random streams of a track: parameters, labels, audio, and one for all its redraws.
PARAMS_STREAM, LABELS_STREAM, AUDIO_STREAM, REDRAW_STREAM = 0, 1, 2, 3


def _track_rng(seed: int, number: int, stream: int) -> np.random.Generator:
    """Independent streams per track: track k does not depend on the corpus size (unless it has to
    be redrawn, which only small corpora do)."""
    return np.random.default_rng([seed, number, stream])


@dataclass
class _Planned:
    """One track of the corpus before its audio is rendered."""

    number: int
    params: TrackParams
    rule_tags: List[str]
    tags: List[str]
    split: str = ""
    redraws: int = 0
    redraw_rng: Optional[np.random.Generator] = None


def _draw_track(seed: int, number: int, label_noise: float) -> _Planned:
    params = sample_track_params(_track_rng(seed, number, PARAMS_STREAM))
    tags = tags_for(params, _track_rng(seed, number, LABELS_STREAM), label_noise)
    return _Planned(number, params, rule_tags(params), tags)


MAX_REDRAWS = 500
N_ANCHORS = 6
ANCHOR_CANDIDATES, ANCHOR_REDRAWS = 3, 100


def _redraw(
    track: _Planned,
    accept: Callable[[_Planned], bool],
    seed: int,
    label_noise: float,
    attempts: int = MAX_REDRAWS,
) -> bool:
    """Redraw a track (same number and split) until `accept(drawn)` holds; False if none does.

    All redraws of a track come one after another from its own stream, so they are reproducible.
    """
    if track.redraw_rng is None:
        track.redraw_rng = _track_rng(seed, track.number, REDRAW_STREAM)
    rng = track.redraw_rng
    for _ in range(attempts):
        params = sample_track_params(rng)
        tags = tags_for(params, rng, label_noise)
        drawn = _Planned(track.number, params, rule_tags(params), tags)
        if accept(drawn):
            track.params, track.rule_tags, track.tags = drawn.params, drawn.rule_tags, drawn.tags
            track.redraws += 1
            return True
    return False


def _members(tracks: Sequence[_Planned]) -> Dict[str, List[_Planned]]:
    return {split: [track for track in tracks if track.split == split] for split in SPLITS}


def _usable(tag: str, tag_sets: Sequence[Sequence[str]]) -> bool:
    """Whether a split with these track tags has a positive and a negative of `tag`."""
    return any(tag in tags for tags in tag_sets) and any(tag not in tags for tags in tag_sets)


def _tags_in_use(tracks: Sequence[_Planned]) -> List[str]:
    """Tags with a positive and a negative in every split (so ROC-AUC is defined there)."""
    by_split = [[track.tags for track in members] for members in _members(tracks).values()]
    return [tag for tag in MOODTHEME_TAGS if all(_usable(tag, sets) for sets in by_split)]


def _secure_anchors(tracks: Sequence[_Planned], seed: int, label_noise: float) -> None:
    """Make N_ANCHORS common tags usable in every split, redrawing a track where one is not (never
    undoing an earlier anchor). A no-op in all but tiny corpora, it leaves them a few tags in use.

    Each anchor is the tag carried by the most tracks that carry no earlier anchor, so that the
    anchors together tag as many tracks as possible and fewer tracks need redrawing afterwards.
    """
    secured: List[str] = []
    for _ in range(N_ANCHORS):
        untagged = [track for track in tracks if not set(track.tags) & set(secured)]
        candidates = [tag for tag in MOODTHEME_TAGS if tag not in secured]
        anchor = max(candidates, key=lambda tag: sum(tag in t.tags for t in untagged))
        needed = secured + [anchor]
        if all(_secure_in_split(members, needed, seed, label_noise)
               for members in _members(tracks).values()):  # fmt: skip
            secured.append(anchor)


def _secure_in_split(members, needed, seed: int, label_noise: float) -> bool:
    """Redraw at most one member so that every tag of `needed` is usable in the split.

    The members carrying the fewest needed tags are tried first, a few of them, a few times each:
    an anchor that hard to place is not worth it.
    """
    if all(_usable(tag, [track.tags for track in members]) for tag in needed):
        return True
    order = sorted(range(len(members)), key=lambda i: len(set(members[i].tags) & set(needed)))
    for index in order[:ANCHOR_CANDIDATES]:
        member = members[index]
        others = [track.tags for track in members[:index] + members[index + 1 :]]

        def accept(drawn: _Planned, others=others) -> bool:
            return all(_usable(tag, others + [drawn.tags]) for tag in needed)

        if _redraw(member, accept, seed, label_noise, ANCHOR_REDRAWS):
            return True
    return False


def _fits(drawn: _Planned, others: Sequence[_Planned], used: Sequence[str]) -> bool:
    """A redraw fits if it carries a tag in use and leaves each of them a negative in the split."""
    carried = set(drawn.tags) & set(used)
    return bool(carried) and all(any(tag not in other.tags for other in others) for tag in carried)


def _plan_tracks(
    n_tracks: int, seed: int, label_noise: float, fractions: Sequence[float]
) -> Tuple[List[_Planned], List[str], List[str]]:
    """Parameters, tags and split of every track, so that every tag in use is usable in every split.

    Tags lacking a positive or a negative in some split are removed from every track; a track left
    with no tag is redrawn (in its split) until it carries a tag in use. Both happen in small
    corpora only.

    Returns:
        (tracks, tags in use, removed tags), tags in the official order.
    """
    tracks = [_draw_track(seed, number, label_noise) for number in range(1, n_tracks + 1)]
    tag_sets = [track.tags for track in tracks]
    for track, index in zip(tracks, stratified_split(tag_sets, fractions, _split_rng(seed))):
        track.split = SPLITS[index]
    _secure_anchors(tracks, seed, label_noise)
    used = _tags_in_use(tracks)
    if not used:
        raise ValueError(f"seed {seed}: no tag is usable in every split; ask for more tracks")
    removed = sorted({tag for t in tracks for tag in t.tags} - set(used), key=TAG_INDEX.get)
    members = _members(tracks)
    for track in tracks:
        if not set(track.tags) & set(used):
            others = [other for other in members[track.split] if other is not track]
            accept = functools.partial(_fits, others=others, used=used)
            if not _redraw(track, accept, seed, label_noise):
                raise ValueError(
                    f"seed {seed}: no redraw of {track_id(track.number)} carries a tag in use "
                    "without making it universal in its split; ask for more tracks"
                )
        track.tags = [tag for tag in track.tags if tag in used]
    return tracks, used, removed


def _split_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng([seed])


def _metadata(tracks, used, removed, seconds, sample_rate, seed, label_noise, fractions) -> dict:
    return {
        "generator": "tfmood.data.synth",
        "seed": seed,
        "seconds": seconds,
        "sample_rate": sample_rate,
        "label_noise": label_noise,
        "split_fractions": dict(zip(SPLITS, fractions)),
        "tags": used,
        "removed_tags": removed,
        "tracks": [
            {
                "track_id": track_id(track.number),
                "path": track_path(track.number),
                "split": track.split,
                "params": track.params.to_dict(),
                "rule_tags": track.rule_tags,
                "tags": track.tags,
                "redraws": track.redraws,
            }
            for track in tracks
        ],
    }


def generate_corpus(
    out_dir: str,
    n_tracks: int,
    seconds: float,
    seed: int,
    sample_rate: int = SAMPLE_RATE,
    progress: bool = True,
    label_noise: float = DEFAULT_LABEL_NOISE,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    workers: int = 1,
) -> CorpusInfo:
    """Write a synthetic mood corpus in the MTG-Jamendo layout.

    Writes `out_dir/audio/NN/N.wav` (16-bit PCM mono), the three split TSVs and `synth.json`,
    every file atomically. The same arguments give the same bytes.

    Args:
        out_dir: the corpus root (created if missing).
        n_tracks: tracks to write (20 or more with the default fractions: each split needs 3).
        seconds: duration of every track.
        seed: the random seed.
        sample_rate: samples per second of the WAV files.
        progress: show a progress bar.
        label_noise: probability that a rule tag is replaced by a random one.
        fractions: train, validation and test shares.
        workers: processes rendering audio (the output does not depend on it).

    Returns:
        A CorpusInfo with the paths, counts and tags in use.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    if seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed}")
    if len(fractions) != len(SPLITS):
        raise ValueError(f"fractions needs one share per split {SPLITS}, got {list(fractions)}")
    if min(split_sizes(n_tracks, fractions)) < MIN_SPLIT_SIZE:
        raise ValueError(
            f"{n_tracks} tracks give splits of {split_sizes(n_tracks, fractions)} tracks; "
            f"every split needs at least {MIN_SPLIT_SIZE} (ask for more tracks)"
        )
    fractions = [float(f) for f in fractions]
    tracks, used, removed = _plan_tracks(n_tracks, seed, label_noise, fractions)
    audio_dir = os.path.join(out_dir, "audio")
    os.makedirs(audio_dir, exist_ok=True)
    _write_audio(tracks, audio_dir, seconds, sample_rate, seed, progress, workers)
    split_paths, split_counts = {}, {}
    for split in SPLITS:
        members = [track for track in tracks if track.split == split]
        split_paths[split] = split_tsv_path(out_dir, split)
        split_counts[split] = len(members)
        atomic.write_text(split_paths[split], _tsv_text(members, seconds))
    metadata_path = os.path.join(out_dir, "synth.json")
    metadata = _metadata(tracks, used, removed, seconds, sample_rate, seed, label_noise, fractions)
    atomic.write_json(metadata_path, metadata, indent=1)
    return CorpusInfo(
        out_dir=out_dir,
        audio_dir=audio_dir,
        split_paths=split_paths,
        metadata_path=metadata_path,
        split_counts=split_counts,
        tags=tuple(used),
        removed_tags=tuple(removed),
        redrawn_tracks=sum(track.redraws > 0 for track in tracks),
    )


def _render_and_write(job: Tuple[TrackParams, int, float, int, int, str]) -> str:
    """Render one track and write its WAV (a top-level function, so worker processes can run it)."""
    params, number, seconds, sample_rate, seed, path = job
    audio = synthesize_track(params, seconds, sample_rate, _track_rng(seed, number, AUDIO_STREAM))
    _write_wav(path, audio, sample_rate)
    return path


def _write_audio(tracks, audio_dir, seconds, sample_rate, seed, progress, workers) -> None:
    """Render every track, in `workers` processes when more than one (the bytes do not change)."""
    from tqdm import tqdm

    jobs = [
        (track.params, track.number, seconds, sample_rate, seed,
         os.path.join(audio_dir, track_path(track.number)))
        for track in tracks
    ]  # fmt: skip
    bar = tqdm(total=len(jobs), desc="synth", unit="track", disable=not progress)
    if workers <= 1:
        for job in jobs:
            _render_and_write(job)
            bar.update()
    else:
        # spawn, not fork: the caller may have started TensorFlow's threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for _ in pool.map(_render_and_write, jobs, chunksize=8):
                bar.update()
    bar.close()
