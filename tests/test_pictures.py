"""advgen.pictures: PNGs drawn without touching matplotlib's global state, written atomically."""

from __future__ import annotations

import matplotlib
import torch

from advgen.methods import AttackRecord, Status
from advgen.outputs import save_heatmaps
from advgen.pictures import PNG_MAGIC, figure_png, save_grid


def test_pictures_leave_the_plotting_backend_and_pyplot_alone(tmp_path):
    """A notebook that calls advgen keeps its backend: advgen never calls ``matplotlib.use`` or opens pyplot figures."""
    import matplotlib.pyplot as plt

    before = matplotlib.get_backend()
    matplotlib.use("pdf")  # any backend but Agg, as a notebook's inline one would be
    try:
        image = torch.zeros(1, 28, 28)
        adversarial = image.clone()
        adversarial[0, 3, 4] = 1.0
        record = AttackRecord(index=7, method="pgd", label=1, clean_pred=1, target=None, status=Status.VULNERABLE,
                              success=True, adv_pred=2, adversarial=adversarial)
        assert save_heatmaps(tmp_path / "heat.png", [record], {7: image})
        assert not save_heatmaps(tmp_path / "none.png", [], {}) and not (tmp_path / "none.png").exists()
        assert matplotlib.get_backend() == "pdf" and plt.get_fignums() == []
        assert (tmp_path / "heat.png").read_bytes().startswith(PNG_MAGIC)
    finally:
        matplotlib.use(before)


def test_the_same_drawing_gives_the_same_bytes_and_a_grid_is_a_png(tmp_path):
    draw = lambda fig: fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])  # noqa: E731
    assert figure_png(2, 2, draw) == figure_png(2, 2, draw)  # no time or version stamp in the file
    path = save_grid(tmp_path / "grid.png", torch.rand(12, 1, 28, 28), nrow=4)
    assert path.read_bytes().startswith(PNG_MAGIC) and list(tmp_path.iterdir()) == [path]  # no temporary left
