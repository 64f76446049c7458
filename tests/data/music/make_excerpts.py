"""Rebuild the music excerpts of this folder from the Debian packages they come from.

    apt-get install hyperrogue-music drascula-music asc-music
    python3 tests/data/music/make_excerpts.py

Each excerpt is a stretch of a freely licensed track (see LICENSES.md), resampled to 22.05 kHz
stereo and re-encoded in the original's format (OGG Vorbis or MP3) at a low bit rate to keep the
repository small; `broken.ogg` is the first 4 KiB of an excerpt, a file that cannot be decoded.
"""

from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

HERE = Path(__file__).resolve().parent
RATE = 22050
# excerpt name -> (source, start second, seconds)
EXCERPTS = {
    "hyperrogue-graveyard.ogg": ("/usr/share/hyperrogue/music/hr3-graveyard.ogg", 0, 65),
    "hyperrogue-hell.ogg": ("/usr/share/hyperrogue/music/hr3-hell.ogg", 30, 65),
    "hyperrogue-ocean.ogg": ("/usr/share/hyperrogue/music/hr-savino-ocean.ogg", 0, 35),
    "hyperrogue-mountain.ogg": ("/usr/share/hyperrogue/music/hr-domina-mountain.ogg", 0, 35),
    "hyperrogue-desert.ogg": ("/usr/share/hyperrogue/music/hr3-desert.ogg", 0, 35),
    "drascula-track1.ogg": ("/usr/share/scummvm/drascula/audio/track1.ogg", 0, 65),
    "drascula-track11.ogg": ("/usr/share/scummvm/drascula/audio/track11.ogg", 0, 35),
    "asc-frontiers.mp3": ("/usr/share/games/asc/music/frontiers.mp3", 0, 65),
}


def excerpt(source: str, start: float, seconds: float) -> np.ndarray:
    info = sf.info(source)
    samples, rate = sf.read(source, start=int(start * info.samplerate),
                            frames=int(seconds * info.samplerate), dtype="float32",
                            always_2d=True)  # fmt: skip
    return soxr.resample(samples, rate, RATE).astype(np.float32)


def main() -> None:
    for name, (source, start, seconds) in EXCERPTS.items():
        audio = excerpt(source, start, seconds)
        path = HERE / name
        if name.endswith(".mp3"):
            sf.write(path, audio, RATE, format="MP3", subtype="MPEG_LAYER_III",
                     bitrate_mode="CONSTANT", compression_level=0.9)  # fmt: skip
        else:
            sf.write(path, audio, RATE, format="OGG", subtype="VORBIS", compression_level=1.0)
        print(f"{path.name}: {len(audio) / RATE:.1f} s, {path.stat().st_size // 1024} KiB")
    broken = HERE / "broken.ogg"
    broken.write_bytes((HERE / "hyperrogue-ocean.ogg").read_bytes()[:4096])
    print(f"{broken.name}: {broken.stat().st_size} bytes")


if __name__ == "__main__":
    main()
