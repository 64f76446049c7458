"""`tfmood summary`: parameters, GFLOPs and per-layer breakdown of a preset or a saved model."""

import json


def register(subparsers):
    parser = subparsers.add_parser(
        "summary", help="trainable parameters and GFLOPs of a preset or a .keras model"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="a preset name (baseline, sa3, sa4, sa5, arelu, ...)")
    source.add_argument("--model", help="a saved .keras model")
    parser.add_argument("--n-tags", type=int, default=56)
    parser.add_argument("--n-mels", type=int, default=96)
    parser.add_argument("--n-frames", type=int, default=1400)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=run)


def run(args) -> int:
    from tfmood.models.complexity import model_complexity, preset_complexity

    if args.preset:
        complexity = preset_complexity(
            args.preset, n_frames=args.n_frames, n_tags=args.n_tags, n_mels=args.n_mels
        )
        name = args.preset
    else:
        from tfmood.models.vggish import load_model

        model = load_model(args.model)
        complexity = model_complexity(model)
        name = args.model
    if args.json:
        print(json.dumps({"preset": name, **complexity.as_dict()}))
    else:
        print(f"{name}: input {args.n_mels} x {args.n_frames}, {args.n_tags} tags")
        print(complexity.table())
        print(f"peak activation memory (one example): {complexity.peak_activation_bytes:,} bytes")
    return 0
