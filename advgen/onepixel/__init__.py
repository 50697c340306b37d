"""Exact exhaustive one-pixel attack and robustness certificate.

::

    from advgen import onepixel
    results = onepixel.attack(model, images, labels)          # images quantised to 256 levels
    [r.status for r in results]                               # certified / vulnerable / misclassified (or timeout)
    onepixel.adversarial_examples(results[0], images[0])      # the images of every flip

Modules: :mod:`.dense` (the level grid and batched model evaluation), :mod:`.graph` (a model traced by
``torch.fx`` into bound steps), :mod:`.rules` (the interval rule of each kind of node), :mod:`.local`
(receptive-field windows), :mod:`.bounds` (the plan and the margins it bounds), :mod:`.linear` (tighter
linear bounds along the pixel), :mod:`.exact` (branch and bound), :mod:`.result` (the per-image result),
:mod:`.certified` (the bounds as a training loss); for all channels of a location together
(``attack(..., joint_channels=True)``), :mod:`.joint` with :mod:`.joint_bounds` and :mod:`.joint_dense`.
"""

from .dense import level_values, quantize
from .exact import Mode, attack
from .result import (FLIP_COLUMNS, STATUSES, OnePixelResult, adversarial_examples, flip_changes, flip_classes,
                     heatmap)

__all__ = ["attack", "Mode", "OnePixelResult", "adversarial_examples", "heatmap", "level_values", "quantize",
           "STATUSES", "FLIP_COLUMNS", "flip_changes", "flip_classes"]
