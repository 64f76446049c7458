"""`tfmood import-torch`: a PyTorch VGG-ish `.pth` file to a `.keras` model, read without torch."""

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "import-torch",
        help="convert PyTorch VGG-ish weights (.pth) to a .keras model, without running code",
        description=(
            "Read a PyTorch state dict (zip or legacy .pth) with a restricted unpickler that "
            "accepts only tensor data, map it onto a tfmood preset (BatchNorm statistics "
            "included) and save the Keras model."
        ),
    )
    parser.add_argument("weights", metavar="IN.pth", help="the PyTorch weights file")
    parser.add_argument(
        "--preset",
        help="the tfmood preset (baseline, sa3, sa4, sa5, ...); default: inferred from the keys",
    )
    parser.add_argument("-o", "--output", required=True, help="the .keras file to write")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tfmood import atomic
    from tfmood.models.torch_import import import_torch

    if not args.output.endswith(".keras"):
        raise ValueError(f"{args.output}: the output must end in .keras")
    model = import_torch(args.weights, preset=args.preset)
    atomic.save_model(model, args.output)
    print(
        f"{args.output}: {model.name} model, {model.count_params():,} weights "
        f"from {args.weights}"
    )
    return 0
