"""`tfmood features`: one audio file to its (96, T) float32 log-mel spectrogram .npy."""


def register(subparsers):
    parser = subparsers.add_parser(
        "features",
        help="compute the (96, T) log-mel spectrogram of an audio file, as the MTG-Jamendo "
        "melspecs were made",
    )
    parser.add_argument("audio", metavar="AUDIO", help="a WAV, MP3, FLAC or OGG Vorbis file")
    parser.add_argument(
        "-o", "--output", required=True, metavar="MEL.npy", help="the .npy to write"
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.data.features import write_mel

    mel = write_mel(args.audio, args.output)
    print(
        f"{args.output}: {mel.shape[0]} mel bands x {mel.shape[1]} frames, "
        f"{mel.min():.1f} to {mel.max():.1f} dB"
    )
    return 0
