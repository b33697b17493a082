"""The label scheme shared by every stage: ids, names and display colours, and label maps that
read annotations of another scheme as this one.

Label maps are uint8 arrays indexed (z, y, x). Everything that is not a defect, including the
open porosity between particles, the binder and the surrounding air or resin, is background.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from roidetect.errors import UserError

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


# ---------------------------------------------------------------------------- other label schemes


def check_label_map(mapping: Any, where: str = "label_map") -> dict[int, int]:
    """A label map checked: raw label values (integers >= 0, or their strings, as JSON keys
    are) to labels of this scheme (0-3, or 255 for voxels that were not annotated).

    Raises
    ------
    UserError
        Naming the first entry that is not of that form.
    """
    if not isinstance(mapping, Mapping):
        raise UserError(f"{where}: give raw label values and the labels they mean, e.g. {{\"1\": 0, \"2\": 1}}")
    checked: dict[int, int] = {}
    for raw, label in mapping.items():
        try:
            raw_value, label_value = int(str(raw)), int(str(label))
        except ValueError:
            raw_value = label_value = -1
        if raw_value < 0 or label_value not in (*CLASS_NAMES, IGNORE):
            raise UserError(f"{where}: {raw!s}={label!s}: map a raw label value (an integer >= 0) to 0 background, "
                            f"1 pore, 2 crack, 3 delamination or {IGNORE} not annotated")
        checked[raw_value] = label_value
    return checked


def parse_label_map(text: str) -> dict[int, int]:
    """A label map from ``RAW=LABEL`` pairs separated by commas, e.g. ``"0=255,1=0,2=1,3=2"``.

    Raises
    ------
    UserError
        Text of another form, or a pair :func:`check_label_map` refuses.
    """
    pairs = [item.partition("=") for item in text.split(",") if item.strip()]
    if not pairs or any(not sep for _, sep, _ in pairs):
        raise UserError(f"--label-map {text}: give RAW=LABEL pairs separated by commas, e.g. 0=255,1=0,2=1")
    raws = [raw.strip() for raw, _, _ in pairs]
    if len(set(raws)) != len(raws):
        raise UserError(f"--label-map {text}: a raw value is mapped twice")
    return check_label_map({raw.strip(): label.strip() for raw, _, label in pairs}, f"--label-map {text}")


def relabel(values: np.ndarray, mapping: Mapping[int, int]) -> np.ndarray:
    """``values`` with every raw value that ``mapping`` names replaced by its label; other values
    are kept. Same shape; the dtype holds both the raw values and the labels."""
    values = np.asarray(values)
    if not mapping:
        return values
    out = values.astype(np.result_type(values.dtype, np.uint8))
    for raw, label in mapping.items():
        out[values == raw] = label
    return out


class RelabelledData:
    """A lazy label volume's data read through :func:`relabel`, block by block.

    Parameters
    ----------
    data : array-like, shape (Z, Y, X)
        What a :class:`roidetect.volume.Volume` holds: sliced, it returns numpy arrays.
    mapping : dict of int to int
        Raw label values to labels of this scheme (:func:`check_label_map`).
    """

    def __init__(self, data: Any, mapping: Mapping[int, int]) -> None:
        self._data, self._mapping = data, dict(mapping)
        self.shape = tuple(int(s) for s in data.shape)
        self.dtype = np.result_type(np.dtype(data.dtype), np.uint8)

    def __getitem__(self, key: Any) -> np.ndarray:
        return relabel(self._data[key], self._mapping)


def relabelled(volume: Any, mapping: Mapping[int, int]) -> Any:
    """A :class:`roidetect.volume.Volume` of labels in another scheme, read as this one
    (lazily; the volume itself when ``mapping`` is empty)."""
    return replace(volume, data=RelabelledData(volume.data, mapping)) if mapping else volume
