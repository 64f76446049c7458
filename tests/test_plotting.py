"""Figures are PNG files written without pyplot and without changing matplotlib's backend."""

import matplotlib

from tfmood import plotting


def test_save_png_writes_a_png_and_leaves_the_backend_alone(tmp_path):
    backend = matplotlib.get_backend()
    figure = plotting.new_figure((3, 2))
    figure.subplots().plot([0, 1], [1, 0])
    path = plotting.save_png(figure, tmp_path / "line.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["line.png"]  # no temporary left
    assert matplotlib.get_backend() == backend


def test_training_curves_plot_leaves_the_backend_alone(tmp_path):
    from tfmood.train.callbacks import plot_training_curves

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_loss,val_roc_auc,val_pr_auc\n0,0.7,0.69,0.6,0.2\n"
                       "1,0.6,0.65,0.7,0.3\n")
    backend = matplotlib.get_backend()
    out = plot_training_curves(str(history), str(tmp_path / "curves.png"))
    assert open(out, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert matplotlib.get_backend() == backend
