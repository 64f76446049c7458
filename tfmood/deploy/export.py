"""The whole TFLite export: rewrite, convert, verify, write.

    export_model(model, target, out_path, ...) -> report dict

Before conversion the model is rebuilt by `tfmood.deploy.fold.inference_model` (static shapes,
BatchNorm/AReLU folded, attention in a fast form). Every export is verified on held-out inputs
before it is written (`tfmood.deploy.verify`); an export that fails is not written. Calibration
and verification data come from `tfmood.deploy.calibration`.
"""

from __future__ import annotations

import os
from typing import Optional

import numpy as np

from tfmood import atomic
from tfmood.deploy.audio_model import AUDIO_IN_TARGETS, audio_in_model, audio_samples_for
from tfmood.deploy.calibration import (
    DEFAULT_HOP_FRAMES,
    evenly_spaced,
    is_music_folder,
    load_split,
    music_data,
    music_windows,
    resolve_splits,
)
from tfmood.deploy.convert import (
    check_target,
    convert,
    model_frames,
    ops_used,
    representative_dataset,
)
from tfmood.deploy.runtime import io_details
from tfmood.deploy.runtime import run as run_tflite
from tfmood.deploy.verify import check_fidelity, check_io, check_outputs
from tfmood.train.precision import as_float32


def export_model(
    model,
    target: str,
    out_path: Optional[str],
    calibration: Optional[str] = None,
    n_frames: Optional[int] = None,
    audio_in: bool = False,
    test: Optional[str] = None,
    root: Optional[str] = None,
    limit: Optional[int] = 200,
    progress: bool = True,
    logits: bool = False,
    hop_frames: Optional[int] = None,
) -> dict:
    """Rewrite, convert, verify and (when every check passes) write a TFLite model.

    Args:
        model: a Keras model or the path of a `.keras` file.
        target: one of TARGETS.
        out_path: the .tflite file to write (None: verify only).
        calibration: corpus directory or split TSV (see `resolve_splits`); None: the default
            synthetic corpus; or a folder of unlabelled audio files (`is_music_folder`): its
            tracks are cut into windows (`music_windows`) and split by track into calibration
            and verification parts (`split_music`), and the export is judged by `check_fidelity`
            against the Keras model instead of by ROC-AUC.
        n_frames: input frames (default: the model's, or 1400 for a model of any length).
        audio_in: export the audio-in model (12 kHz waveform of `audio_samples_for(n_frames)`
            samples -> tag scores, LogMel inside), verified against the mel-input Keras model on
            the LogMel of the same audio.
        test: explicit test split TSV for the verification; with a music-folder
            `calibration`, a folder of audio files whose windows (all of them) verify instead of
            the calibration folder's verification part.
        root: the audio root of the splits (default: `<TSV folder>/audio`).
        limit: at most this many examples per split.
        progress: show a progress bar of the stages (data, convert, verify).
        logits: output the tag logits instead of the sigmoid scores (`tfmood.deploy.fold.logits_model`;
            the app applies the sigmoid). For int8 the logits get their own calibrated scale,
            finer than the sigmoid output's fixed 1/256 steps where scores bunch near a tag's
            base rate. Verified on the sigmoid of the outputs.
        hop_frames: window step of music folders (default n_frames // 8).

    Returns:
        The report: target, output ("scores" or "logits"), path, written, bytes, ops,
        inputs/outputs (dtype, shape, quantisation), checks (metric, value, limit, passed),
        passed, and the data used.
    """
    from tfmood.deploy.fold import inference_model, logits_model
    from tfmood.models.vggish import load_model

    check_target(target)
    if audio_in and target not in AUDIO_IN_TARGETS:
        raise ValueError(
            f"the audio-in model is exported as {' or '.join(AUDIO_IN_TARGETS)}, not {target}: "
            "8-bit weights or activations in the LogMel front-end lose the quiet spectral bins "
            "(export the mel-input model for int8)"
        )
    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model))
    model = as_float32(model)
    from tqdm import tqdm

    frames = model_frames(model, n_frames)
    music = is_music_folder(calibration)
    stages = tqdm(total=3, desc=f"export {target}", unit="stage", disable=not progress)
    if music:
        data, described = music_data(calibration, test, frames, audio_in, limit, hop_frames,
                                      model.inputs[0].shape[1])  # fmt: skip
    else:
        splits = resolve_splits(calibration, test)
        data = {role: load_split(tsv, root, frames, audio_in, limit)
                for role, tsv in splits.items()}  # fmt: skip
        described = {role: {"tsv": splits[role], "examples": len(data[role].inputs)}
                     for role in splits}  # fmt: skip
    stages.update()

    graph = inference_model(model, "int8" if target == "int8" else "float", frames)
    if logits:
        graph, model = logits_model(graph), logits_model(model)
    if audio_in:
        graph = audio_in_model(graph, audio_samples_for(frames))
    representative = representative_dataset(data["calibration"].inputs)
    flatbuffer = convert(graph, target, representative, rewrite=False)
    stages.update()

    test_data = data["test"]
    reference = _keras_scores(model, test_data.inputs, audio_in)
    outputs = run_tflite(flatbuffer, test_data.inputs)
    details = io_details(flatbuffer)
    output = details["outputs"][0]
    grid = output["quantization"]
    numbers = None
    if music:
        output_checks, numbers = check_fidelity(target, reference, outputs, logits)
    else:
        output_checks = check_outputs(
            target, reference, outputs, test_data.labels,
            (grid["scale"], grid["zero_point"]) if output["dtype"] == "int8" and grid else None,
            logits,
        )  # fmt: skip
    checks = check_io(flatbuffer, target, logits) + output_checks
    stages.update()
    stages.close()
    passed = all(check.passed for check in checks)
    if passed and out_path is not None:
        atomic.write_bytes(out_path, flatbuffer)
    return {
        "target": target,
        "output": "logits" if logits else "scores",
        "audio_in": audio_in,
        "path": out_path,
        "written": bool(passed and out_path is not None),
        "bytes": len(flatbuffer),
        "ops": ops_used(flatbuffer),
        **details,
        "checks": [check.as_dict() for check in checks],
        "passed": passed,
        "data": described,
        **({"fidelity": numbers} if numbers is not None else {}),
    }


def verify_on_music(model, flatbuffer: bytes, target: str, folder: str,
                    audio_in: bool = False, logits: bool = False,
                    hop_frames: Optional[int] = None, limit: Optional[int] = None) -> dict:
    """Fidelity of an exported model to its Keras model on every window of a music folder.

    Args:
        model: the Keras model (mel input, giving scores) or its path.
        flatbuffer: the exported model.
        target: its conversion target (which limits apply).
        folder: a folder of audio files.
        audio_in: the export takes waveforms.
        logits: the export gives logits (compared with the Keras model's, as sigmoids).
        hop_frames: window step (default n_frames // 8).
        limit: at most this many windows (evenly spaced).

    Returns:
        {"data": ..., "fidelity": ..., "checks": [...], "passed": bool}.
    """
    if isinstance(model, (str, os.PathLike)):
        from tfmood.models.vggish import load_model

        model = load_model(os.fspath(model))
    model = as_float32(model)
    if logits:
        from tfmood.deploy.fold import logits_model

        model = logits_model(model)
    frames = model_frames(model, None)
    windows = evenly_spaced(music_windows(folder, frames, hop_frames, audio_in,
                                    model.inputs[0].shape[1]), limit)  # fmt: skip
    reference = _keras_scores(model, windows.inputs, audio_in)
    outputs = run_tflite(flatbuffer, windows.inputs)
    checks, numbers = check_fidelity(target, reference, outputs, logits)
    hop = int(hop_frames or max(1, frames * DEFAULT_HOP_FRAMES // 1400))
    return {
        "data": {**windows.describe(folder), "hop_frames": hop},
        "fidelity": numbers,
        "checks": [check.as_dict() for check in checks],
        "passed": all(check.passed for check in checks),
    }


def _keras_scores(model, inputs: np.ndarray, audio_in: bool) -> np.ndarray:
    """The Keras model's scores; for audio, on the Keras LogMel of the same waveforms."""
    if audio_in:
        from tfmood.layers.log_mel import LogMel

        log_mel = LogMel(n_mels=model.inputs[0].shape[1])
        inputs = np.concatenate([np.asarray(log_mel(batch)) for batch in np.split(
            inputs, range(8, len(inputs), 8))])  # fmt: skip
    return np.asarray(model.predict(inputs, batch_size=8, verbose=0), dtype=np.float32)
