"""The label scheme shared by every stage: ids, names and display colours.

Label maps are uint8 arrays indexed (z, y, x). Everything that is not a defect, including the
open porosity between particles, the binder and the surrounding air or resin, is background.
"""

from __future__ import annotations

BACKGROUND = 0
PORE = 1
CRACK = 2
DELAMINATION = 3
IGNORE = 255
"""Voxels that were not annotated; losses and metrics skip them."""

CLASS_NAMES: dict[int, str] = {
    BACKGROUND: "background",
    PORE: "pore",
    CRACK: "crack",
    DELAMINATION: "delamination",
}
DEFECT_CLASSES: tuple[int, ...] = (PORE, CRACK, DELAMINATION)
DEFECT_NAMES: tuple[str, ...] = tuple(CLASS_NAMES[c] for c in DEFECT_CLASSES)
NUM_CLASSES = len(CLASS_NAMES)
"""Number of network output channels: background plus the three defect classes."""

CLASS_IDS: dict[str, int] = {name: cid for cid, name in CLASS_NAMES.items()}

DATASET_FILE = "dataset.json"
DATASET_FORMAT = "roidetect-dataset/1"
"""The ``format`` of an annotated dataset's ``DATASET_FILE`` (images, labels in this scheme,
splits): ``roidetect synth`` writes it, training and ``roidetect calibrate --data`` read it."""

COLOURS_RGB: dict[int, tuple[int, int, int]] = {
    BACKGROUND: (0, 0, 0),
    PORE: (0, 158, 255),
    CRACK: (255, 64, 64),
    DELAMINATION: (255, 200, 0),
    IGNORE: (128, 128, 128),
}
"""Display colours (colour-blind-safe blue / red / amber), 0-255 per channel."""


def class_id(name: str) -> int:
    """Return the id of a class given its name (case-insensitive).

    Raises
    ------
    KeyError
        If ``name`` is not one of :data:`CLASS_NAMES`.
    """
    key = name.strip().lower()
    if key not in CLASS_IDS:
        raise KeyError(f"unknown class {name!r}; known classes: {', '.join(CLASS_IDS)}")
    return CLASS_IDS[key]
