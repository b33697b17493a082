"""Material phases of a phantom's phase map.

A phase map is a uint8 array (z, y, x) holding one of the codes below per voxel. Every void
(open porosity, the space above the sample, and the voids that defects open) is :data:`VOID`;
which voids are defects is recorded in the label map, not here.
"""

from __future__ import annotations

VOID = 0
"""Open porosity, vacuum or resin above the sample, and voids opened by defects."""
ACTIVE = 1
"""Primary active material: NMC / LCO / NCA in cathodes, silicon in anodes."""
ACTIVE_2 = 2
"""Second active material (graphite in Si/graphite anodes)."""
BINDER = 3
"""Carbon-binder domain (carbon black + PVDF), nanoporous."""
COLLECTOR = 4
"""Current-collector foil (Al under cathodes, Cu under anodes)."""

PARTICLE_PHASES: tuple[int, ...] = (ACTIVE, ACTIVE_2)
