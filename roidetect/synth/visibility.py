"""Which delaminations show in the scan: how much each gap darkens it, in noise units.

A delamination is a thin void between a bright particle and faint CBD. Narrow against the
resolution, or in a scan whose CBD hardly differs from void, the particle's blur and the
noise swallow it: a person annotating the scan would not see it, and a label there teaches a
network to guess. The phantom is therefore imaged again with the gaps filled with what would
be there without them (the material that was there; CBD for a gap on the particle's side,
since a receded particle without its gap is a smaller particle touching CBD, and for the gap
under a lifted CBD film, the film lying on the particle), twice: with
the scan's own random streams (same noise and texture) and with an independent stream. A
gap's *signal* is the mean grey-value drop over the voxels it emptied between the scan and
its filled twin, divided by the random spread of grey values inside the CBD: the standard
deviation of the two filled scans' difference over sqrt(2), i.e. noise plus the CBD's
texture, what an observer compares a gap with (the deterministic blur of nearby particles
cancels). Gaps below ``DefectParams.delamination_min_signal`` stay in the phantom but leave
the ground truth: their voxels are labelled 255 (not annotated), so training skips them and
evaluation counts a prediction on them neither right nor wrong; the manifest lists them as
``unannotated``. With ``DefectParams.delamination_min_wall_fwhm`` above 0, gaps on the CBD's
side behind a wall (:func:`gap_walls`) thinner than that many resolutions leave it too.

What tells a particle/CBD gap from the pore space beside the particle is the CBD wall
between them; :func:`gap_walls` measures its thinnest point (the manifest's ``wall_vox``),
to compare with the scan's resolution.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from roidetect.labels import BACKGROUND
from roidetect.synth.phases import BINDER, PARTICLE_PHASES, VOID

_MIN_REFERENCE_VOXELS = 100
MAX_WALL_VOX = 8.0
"""Walls at least this thick (voxels) are recorded as this (randomised scans resolve 1-5 voxels)."""


def gap_signals(image: np.ndarray, filled: np.ndarray, filled_other: np.ndarray, instances: np.ndarray,
                ids: list[int], phases: np.ndarray) -> dict[int, float]:
    """Mean darkening of each gap, in units of the CBD's random grey-value spread.

    Parameters
    ----------
    image : ndarray (Z, Y, X)
        The scan with the gaps.
    filled : ndarray (Z, Y, X)
        The same scan (same random streams) with the gaps filled.
    filled_other : ndarray (Z, Y, X)
        The filled phantom scanned with an independent random stream.
    instances : int ndarray (Z, Y, X)
        Defect ids where the defect emptied solid (a gap's old pores carry 0).
    ids : list of int
        The gaps to measure.
    phases : uint8 ndarray (Z, Y, X)
        Phase map of the filled phantom (where to measure the spread).

    Returns
    -------
    dict
        id -> signal (dimensionless; 1 = the gap is on average one standard deviation darker;
        0 for a gap that emptied nothing).
    """
    if not ids:
        return {}
    spread = _random_spread(filled.astype(np.float64) - filled_other.astype(np.float64), phases)
    drop = filled.astype(np.float64) - image.astype(np.float64)
    means = ndimage.mean(drop, instances, ids)
    return {int(i): float(np.nan_to_num(m) / spread) for i, m in zip(ids, means)}


def gap_walls(phases: np.ndarray, labels: np.ndarray, instances: np.ndarray, ids: list[int]) -> dict[int, float]:
    """Thinnest solid between each gap and the open pore space, in voxels, up to :data:`MAX_WALL_VOX`.

    Parameters
    ----------
    phases : uint8 ndarray (Z, Y, X)
        Phase map with the defects cut.
    labels : uint8 ndarray (Z, Y, X)
        Class labels; the open pore space is void labelled background.
    instances : int ndarray (Z, Y, X)
        Defect ids.
    ids : list of int
        The gaps to measure.

    Returns
    -------
    dict
        id -> the smallest distance from a voxel of the gap to a voxel of pore space, less
        one (the voxels in between); :data:`MAX_WALL_VOX` where the wall is at least that
        thick. Measured in the gap's bounding box widened by the maximum, so it costs a
        small part of a full distance transform.
    """
    margin = int(MAX_WALL_VOX) + 1   # a pore voxel within margin of a gap voxel lies in the widened box
    boxes = ndimage.find_objects(instances)
    walls = {}
    for i in ids:
        box = tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n))
                    for s, n in zip(boxes[i - 1], instances.shape))
        pore_space = (phases[box] == VOID) & (labels[box] == BACKGROUND)
        nearest = ndimage.distance_transform_edt(~pore_space)[instances[box] == i].min() if pore_space.any() else np.inf
        walls[int(i)] = float(min(nearest - 1.0, MAX_WALL_VOX))
    return walls


def _random_spread(difference: np.ndarray, phases: np.ndarray) -> float:
    """Standard deviation of one scan's random part inside the CBD (else the particles, else anywhere)."""
    for codes in ((BINDER,), PARTICLE_PHASES):
        inside = ndimage.binary_erosion(np.isin(phases, codes), iterations=1)
        if inside.sum() >= _MIN_REFERENCE_VOXELS:
            return max(float(difference[inside].std()) / np.sqrt(2.0), 1e-9)
    return max(float(difference.std()) / np.sqrt(2.0), 1e-9)
