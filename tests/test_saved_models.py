"""The shipped MTG-Jamendo baseline artifacts (saved_models/): provenance, parity, fidelity.

The rebuild test runs `saved_models/build.py` from the PyTorch checkpoint into a temporary
folder and compares with the shipped files; it and the PyTorch parity test need
../shared/reference (present beside the main repository only) and skip without it. The LiteRT
fidelity tests need only the shipped files and the committed excerpts.
"""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from tfmood.deploy import audio_model, calibration, export, runtime, verify

REPO = Path(__file__).resolve().parents[1]
SAVED = REPO / "saved_models"
MUSIC = REPO / "tests" / "data" / "music"


def _build_module():
    spec = importlib.util.spec_from_file_location("saved_models_build", SAVED / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _build_module()
ARTIFACTS = (build.KERAS_NAME,) + tuple(name for name, *_ in build.EXPORTS)


@pytest.fixture(scope="module")
def keras_model():
    from tfmood.models.vggish import load_model

    return load_model(str(SAVED / build.KERAS_NAME))  # safe_mode=True


def test_the_folder_holds_every_artifact_its_report_readme_and_notice():
    for name in ARTIFACTS:
        assert (SAVED / name).is_file(), name
        report = json.loads((SAVED / f"{name}.json").read_text())
        assert report["artifact"] == name
        assert report.get("passed", True)
    readme = (SAVED / "README.md").read_text()
    for name in ARTIFACTS:
        assert name in readme
    for needle in ("Music Technology Group", "Universitat Pompeu Fabra", "Apache", "0.7258",
                   "0.1077"):  # fmt: skip
        assert needle in readme
    assert "Apache License" in (SAVED / "NOTICE").read_text()
    total = sum(path.stat().st_size for path in SAVED.iterdir() if path.is_file())
    assert total < 8_000_000, f"saved_models/ is {total:,} bytes"


def test_shipped_keras_model_matches_pytorch(reference_dir, keras_model):
    report = build.parity(keras_model, reference_dir / "mtg_baseline" / "io.npz")
    print(f"max |Keras - PyTorch| {report['max_abs_diff']:.3g}")
    assert report["passed"], report


@pytest.mark.parametrize("name, target, audio_in, logits", build.EXPORTS)
def test_shipped_tflite_meets_its_floors_on_the_excerpts(keras_model, name, target, audio_in,
                                                        logits):  # fmt: skip
    """Every window of the committed excerpts (calibration tracks included), run in LiteRT."""
    report = export.verify_on_music(keras_model, (SAVED / name).read_bytes(), target, str(MUSIC),
                                    audio_in=audio_in, logits=logits)  # fmt: skip
    print(name, json.dumps(report["fidelity"]))
    assert report["data"]["skipped"] and "broken.ogg" in report["data"]["skipped"][0]
    assert len(report["data"]["tracks"]) == 8
    assert report["passed"], [check for check in report["checks"] if not check["passed"]]


def test_shipped_int8_model_is_full_integer_with_logits_out():
    details = runtime.io_details((SAVED / build.INT8_NAME).read_bytes())
    (mel,), (out,) = details["inputs"], details["outputs"]
    assert mel["dtype"] == out["dtype"] == "int8"
    assert list(mel["shape"]) == [1, 96, 1400] and list(out["shape"]) == [1, 56]
    audio = runtime.io_details((SAVED / build.AUDIO_NAME).read_bytes())
    assert list(audio["inputs"][0]["shape"]) == [1, audio_model.audio_samples_for(1400)]


@pytest.mark.slow
def assert_same_report(rebuilt, shipped, name: str) -> None:
    """The rebuilt report says what the shipped one says: the same fields, texts, verdicts and
    shapes; numbers equal on the machine kind that built them, near elsewhere (oneDNN kernels,
    on by default on AVX-512 only, round the Keras outputs behind calibration and checks
    differently)."""
    assert type(rebuilt) is type(shipped), name
    if isinstance(shipped, dict):
        assert rebuilt.keys() == shipped.keys(), name
        for key in shipped:
            assert_same_report(rebuilt[key], shipped[key], f"{name}.{key}")
    elif isinstance(shipped, list):
        assert len(rebuilt) == len(shipped), name
        for index, (a, b) in enumerate(zip(rebuilt, shipped)):
            assert_same_report(a, b, f"{name}[{index}]")
    elif isinstance(shipped, float):
        assert rebuilt == pytest.approx(shipped, rel=0.25, abs=0.01), name
    elif isinstance(shipped, str) and any(c.isdigit() for c in shipped) and "=" in shipped:
        assert rebuilt.split("=")[0] == shipped.split("=")[0], name  # e.g. "scale=... zero_point=..."
    elif isinstance(shipped, int) and not isinstance(shipped, bool):
        assert abs(rebuilt - shipped) <= max(3, 0.01 * abs(shipped)), name  # sizes, zero points
    else:
        assert rebuilt == shipped, name


def test_rebuild_gives_the_shipped_files(reference_dir, tmp_path, keras_model):
    """The build command reproduces the shipped files: same bytes, or within the tolerances."""
    from tfmood.models.vggish import load_model

    checkpoint = reference_dir / "mtg_baseline" / "best_model.pth"
    reports = build.build(tmp_path, checkpoint=checkpoint, music=MUSIC)
    rebuilt = load_model(str(tmp_path / build.KERAS_NAME))
    for ours, theirs in zip(keras_model.get_weights(), rebuilt.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    for name, target, audio_in, logits in build.EXPORTS:
        shipped = json.loads((SAVED / f"{name}.json").read_text())
        shipped.pop("extra_verification", None)
        assert_same_report(reports[name], shipped, name)
        new, old = (tmp_path / name).read_bytes(), (SAVED / name).read_bytes()
        if new == old:
            continue
        # Not byte-identical (another TensorFlow build): the two must agree on the excerpts.
        windows = calibration.music_windows(str(MUSIC), 1400, audio_in=audio_in)
        a = runtime.run(new, windows.inputs)
        b = runtime.run(old, windows.inputs)
        checks, numbers = verify.check_fidelity(target, a, b, logits)
        assert all(check.passed for check in checks), numbers
