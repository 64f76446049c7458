"""The MTG-Jamendo data set's own tagging pipeline, timed, for `bench_tagger.py` to compare with.

essentia MonoLoader (12 kHz, resampleQuality=4) -> the data set's essentia melspectrogram of the
whole track (512-sample Hann frames every 256, 96 Slaney mel bands, lin2db) -> the PyTorch
baseline (VGG-ish, 5 blocks) on the first 1400 frames, one track at a time, as the MediaEval
baseline tagged tracks.

Not a tfmood dependency: run it only with a throwaway environment holding essentia and torch,
e.g. `/tmp/venv_ess/bin/python bench/bench_essentia_baseline.py FOLDER --weights
../shared/reference/mtg_baseline/best_model.pth`. It prints one JSON line (tracks, seconds,
audio hours, peak RSS) and checks the model against the reference's io.npz when present.
"""

import argparse
import glob
import json
import os
import platform
import resource
import time

import numpy as np
import torch
from torch import nn

import essentia
import essentia.standard as es

essentia.log.infoActive = False
essentia.log.warningActive = False

POOLS = ((2, 4), (2, 4), (2, 4), (3, 5), (4, 4))
FILTERS = (64, 128, 128, 128, 64)


class VGGish(nn.Module):
    """The MTG-Jamendo baseline: BN on the input, 5 x (3x3 conv, BN, ELU, max-pool), dense."""

    def __init__(self, n_tags=56):
        super().__init__()
        self.bn_init = nn.BatchNorm2d(1)
        channels = 1
        for i, (filters, pool) in enumerate(zip(FILTERS, POOLS), 1):
            setattr(self, f"conv_{i}", nn.Conv2d(channels, filters, 3, padding=1))
            setattr(self, f"bn_{i}", nn.BatchNorm2d(filters))
            setattr(self, f"mp_{i}", nn.MaxPool2d(pool))
            channels = filters
        self.elu = nn.ELU()
        self.dropout = nn.Dropout(0.5)
        self.dense = nn.Linear(channels, n_tags)

    def forward(self, x):  # (batch, 96, frames)
        x = self.bn_init(x.unsqueeze(1))
        for i in range(1, 6):
            x = self.elu(getattr(self, f"bn_{i}")(getattr(self, f"conv_{i}")(x)))
            x = getattr(self, f"mp_{i}")(x) if i < 5 else torch.amax(x, dim=(2, 3), keepdim=True)
        x = self.dropout(x.flatten(1))
        return torch.sigmoid(self.dense(x))


class Melspectrogram:
    """The data set's essentia melspectrogram (its scripts' parameters), (96, frames) dB."""

    def __init__(self, sample_rate=12000):
        self.window = es.Windowing(type="hann", normalized=False)
        self.spectrum = es.Spectrum()
        self.mel = es.MelBands(numberBands=96, sampleRate=sample_rate, lowFrequencyBound=0,
                               highFrequencyBound=sample_rate / 2, inputSize=257,
                               weighting="linear", normalize="unit_tri",
                               warpingFormula="slaneyMel", type="power")
        self.db = es.UnaryOperator(type="lin2db", scale=2)

    def __call__(self, audio):
        return np.array([
            self.db(self.mel(self.spectrum(self.window(frame))))
            for frame in es.FrameGenerator(audio, frameSize=512, hopSize=256,
                                           startFromZero=False)
        ]).T


def tile_or_crop(mel, n_frames=1400):
    if mel.shape[1] < n_frames:
        mel = np.tile(mel, (1, -(-n_frames // mel.shape[1])))
    return mel[:, :n_frames]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--weights", required=True, help="the baseline's best_model.pth")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--limit", type=int, default=None, help="tag only the first N tracks")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = VGGish()
    state = torch.load(args.weights, map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    model.eval()
    reference = os.path.join(os.path.dirname(args.weights), "io.npz")
    parity = None
    if os.path.isfile(reference):
        with np.load(reference) as io, torch.no_grad():
            parity = float(np.abs(model(torch.from_numpy(io["x"])).numpy() - io["y"]).max())
    paths = sorted(p for p in glob.glob(os.path.join(args.folder, "**", "*"), recursive=True)
                   if p.lower().endswith((".wav", ".flac", ".ogg", ".oga", ".mp3")))
    paths = paths[: args.limit] if args.limit else paths
    melspectrogram = Melspectrogram()
    seconds_audio = 0.0
    scores, failed = {}, []
    start = time.perf_counter()
    for path in paths:
        try:
            audio = es.MonoLoader(filename=path, sampleRate=12000, resampleQuality=4)()
        except RuntimeError:
            failed.append(path)
            continue
        seconds_audio += audio.size / 12000
        mel = melspectrogram(audio)
        with torch.no_grad():
            out = model(torch.from_numpy(tile_or_crop(mel).astype(np.float32)[None]))
        scores[path] = out.numpy()[0].tolist()
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "pipeline": "essentia MonoLoader + essentia melspec + PyTorch baseline (first 1400)",
        "tracks": len(scores), "failed": failed, "seconds": elapsed, "audio_hours": seconds_audio / 3600,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__, "essentia": essentia.__version__,
        "python": platform.python_version(), "threads": args.threads,
        "parity_vs_io_npz": parity, "scores": scores,
    }))


if __name__ == "__main__":
    main()
