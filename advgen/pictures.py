"""Pictures: image grids and matplotlib figures as PNG, each file written atomically.

Figures are drawn on a :class:`~matplotlib.figure.Figure` of their own with the Agg canvas, never through
``pyplot`` or ``matplotlib.use``: advgen called from a notebook leaves its plotting backend as it was, and no
figure is left open in pyplot's registry. PNGs carry no "Software" stamp, so the same drawing gives the same bytes.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable

import torch

from .files import atomic_write_bytes

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"  # the first 8 bytes of every PNG file


def figure_png(width: float, height: float, draw: Callable[[Any], None]) -> bytes:
    """``draw(figure)`` on a fresh ``width`` x ``height`` inch Agg figure at 100 dpi, returned as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    draw(fig)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def save_figure(path: str | os.PathLike, width: float, height: float, draw: Callable[[Any], None]) -> Path:
    """:func:`figure_png` written to ``path``."""
    return atomic_write_bytes(path, figure_png(width, height, draw))


def save_grid(path: str | os.PathLike, images: torch.Tensor, nrow: int = 8) -> Path:
    """A grid of ``images`` (N, C, H, W) in [0, 1], ``nrow`` to a row, grey between them."""
    from torchvision.utils import save_image

    buf = io.BytesIO()
    save_image(images, buf, format="png", nrow=nrow, padding=2, pad_value=0.5)
    return atomic_write_bytes(path, buf.getvalue())
