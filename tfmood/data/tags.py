"""The 56 MTG-Jamendo mood/theme tags, in the order of the official ground truth."""

PREFIX = "mood/theme---"

MOODTHEME_TAGS = (
    "action",
    "adventure",
    "advertising",
    "background",
    "ballad",
    "calm",
    "children",
    "christmas",
    "commercial",
    "cool",
    "corporate",
    "dark",
    "deep",
    "documentary",
    "drama",
    "dramatic",
    "dream",
    "emotional",
    "energetic",
    "epic",
    "fast",
    "film",
    "fun",
    "funny",
    "game",
    "groovy",
    "happy",
    "heavy",
    "holiday",
    "hopeful",
    "inspiring",
    "love",
    "meditative",
    "melancholic",
    "melodic",
    "motivational",
    "movie",
    "nature",
    "party",
    "positive",
    "powerful",
    "relaxing",
    "retro",
    "romantic",
    "sad",
    "sexy",
    "slow",
    "soft",
    "soundscape",
    "space",
    "sport",
    "summer",
    "trailer",
    "travel",
    "upbeat",
    "uplifting",
)

N_TAGS = len(MOODTHEME_TAGS)

TAG_INDEX = {tag: i for i, tag in enumerate(MOODTHEME_TAGS)}


def tag_index(tag: str) -> int:
    """Column of `tag` (with or without the `mood/theme---` prefix); KeyError names the tag."""
    name = tag[len(PREFIX):] if tag.startswith(PREFIX) else tag
    try:
        return TAG_INDEX[name]
    except KeyError:
        raise KeyError(f"unknown mood/theme tag {tag!r}") from None
