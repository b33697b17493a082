"""Where and how deep to mill one site, and how much material each step removes.

Top-down (plan view, e.g. SIMS of a pillar): a square crater of side S = fov + 2 * margin
around the target, milled from the local surface down to the plane ``z_p = top - standoff``
just above the shallowest member. The last ``polish_um`` above z_p is the FIB polish, an
optional laser removes everything deeper than ``laser_margin`` above z_p, the FIB rough mill
the rest. Imaging then consumes material below z_p: SIMS frames until ``standoff`` past the
deepest member's top, slices until ``standoff`` past the deepest member's bottom.

Cross-section: a face at ``m_face = near - standoff`` in front of the members, reaching the
depth ``z_b = deepest member bottom + standoff``, with a ramped trench of length
``L = H * tan(view angle) + polish`` in front of it (H = z_b minus the surface at the face)
so that the imaging column sees the whole face; the last ``polish_um`` of the trench next to
the face is the polish; slices or SIMS frames then advance the face along m.

Material is only counted below the sample surface, cell by cell over the footprint
(:func:`roidetect.targeting.geometry.material_between`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from roidetect.targeting.candidates import Frame
from roidetect.targeting.geometry import ScanGeometry, SurfaceMap, material_between
from roidetect.targeting.instrument import Instrument


@dataclass(frozen=True)
class Pattern:
    """One FIB milling rectangle relative to the site target (um); x/y as in docs/targeting.md."""

    step: str
    width_um: float
    height_um: float
    depth_um: float
    x_um: float
    y_um: float
    cross_section: str
    scan_direction: str


@dataclass(frozen=True)
class Layout:
    """Geometry and removed volumes of one site (um, um^3, scan coordinates)."""

    plane_um: float  # scan coordinate of the exposed plane/face along the milling axis
    depth_um: float  # material to remove: crater depth at the target, or the face height
    fov_um: float  # imaged field of view
    face_width_um: float  # milled width (crater side, or trench width)
    trench_length_um: float  # crater side (top-down) or trench length (cross-section)
    volumes_um3: dict[str, float]  # laser, fib_rough, fib_polish, imaging
    imaging_count: int  # SIMS frames or slices
    imaging_depth_um: float  # depth the imaging step consumes along the milling axis
    box_lo: np.ndarray  # (3,) milled box (z, y, x), imaging included
    box_hi: np.ndarray
    clearance_um: float  # distance of the box from the scan's sides and bottom (negative: outside)
    patterns: list[Pattern] = field(default_factory=list)


def imaging_reach(instrument: Instrument, material: str, need_um: float) -> tuple[int, float]:
    """How many SIMS frames or slices reach ``need_um`` past the plane, and the depth they consume.

    SIMS: frames = max(frames_min, ceil(need / d_frame)), d_frame = rate * I * t_frame / fov^2.
    Slice-and-view: slices = max(1, ceil(need / slice)).
    """
    need = max(need_um, 0.0)
    if instrument.sims is not None:
        per_frame = instrument.sims_depth_per_frame_um(material)
        frames = max(int(instrument.sims.frames_min.value), math.ceil(need / per_frame - 1e-9))
        return frames, frames * per_frame
    assert instrument.slice_and_view is not None
    thickness = instrument.slice_and_view.slice_um.value
    slices = max(1, math.ceil(need / thickness - 1e-9))
    return slices, slices * thickness


def top_down(target: np.ndarray, near: float, far: float, deepest_near: float, surface: SurfaceMap,
             geometry: ScanGeometry, instrument: Instrument, material: str, standoff_um: float,
             polish_um: float, crater_margin_um: float) -> Layout:
    """Crater layout of a top-down site.

    Parameters
    ----------
    target : (3,) target (z, y, x) um
    near, far : float
        Shallowest member top and deepest member bottom (z, um).
    deepest_near : float
        Deepest member top (z, um); SIMS frames are added until they reach ``standoff_um`` past
        it, so a member whose top lies up to the standoff deeper than detected is still exposed.
    """
    side = instrument.fov_um.value + 2 * crater_margin_um
    y_range = (target[1] - side / 2, target[1] + side / 2)
    x_range = (target[2] - side / 2, target[2] + side / 2)
    z, _, _, area = surface.sample(y_range, x_range)
    plane = near - standoff_um
    polish_top = plane - polish_um
    rough_top = -np.inf
    volumes = {"laser": 0.0}
    if instrument.laser_margin_um is not None:
        rough_top = min(plane - instrument.laser_margin_um.value, polish_top)
        volumes["laser"] = material_between(z, -np.inf, rough_top, area)
    volumes["fib_rough"] = material_between(z, rough_top, polish_top, area)
    volumes["fib_polish"] = material_between(z, polish_top, plane, area)
    need = (deepest_near if instrument.sims is not None else far) + standoff_um - plane
    count, consumed = imaging_reach(instrument, material, need)
    volumes["imaging"] = material_between(z, plane, plane + consumed, area)
    box_lo = np.array([min(float(z.min()), plane), y_range[0], x_range[0]])
    box_hi = np.array([plane + consumed, y_range[1], x_range[1]])
    patterns = [Pattern(step, side, side, volumes[step] / side ** 2, 0.0, 0.0, "Rectangle", "TopToBottom")
                for step in ("fib_rough", "fib_polish")]
    return Layout(plane_um=plane, depth_um=max(plane - float(surface.at(target[1], target[2])), 0.0),
                  fov_um=instrument.fov_um.value,
                  face_width_um=side, trench_length_um=side, volumes_um3=volumes, imaging_count=count,
                  imaging_depth_um=consumed, box_lo=box_lo, box_hi=box_hi,
                  clearance_um=clearance(box_lo, box_hi, geometry), patterns=patterns)


def cross_section(target: np.ndarray, frame: Frame, near: float, far: float, deepest_near: float,
                  bottom_z: float, surface: SurfaceMap, geometry: ScanGeometry, instrument: Instrument,
                  material: str, standoff_um: float, polish_um: float, crater_margin_um: float) -> Layout:
    """Trench-and-face layout of a cross-section site.

    Parameters
    ----------
    target : (3,) target (z, y, x) um
    frame : Frame of the cross-section (m along the slicing direction)
    near, far, deepest_near : float
        Members' nearest near edge, farthest far edge and farthest near edge along m (frame um).
    bottom_z : float
        Deepest member bottom (z, um).
    """
    width = instrument.fov_um.value + 2 * crater_margin_um
    v_centre = target[frame.v_axis]
    v_range = (v_centre - width / 2, v_centre + width / 2)
    m_target = frame.m_sign * target[frame.m_axis]
    face = near - standoff_um
    z_bottom = bottom_z + standoff_um
    z_face, _, area_face = frame.sample_lateral(surface, (face - polish_um, face), v_range)
    height = max(z_bottom - float(z_face.min()), 0.0)
    length = height * math.tan(math.radians(instrument.view_angle_deg.value)) + polish_um
    ramp_start = face - length
    z, m, area = frame.sample_lateral(surface, (ramp_start, face - polish_um), v_range)
    ramp_bottom = float(z_face.min()) + height * (m - ramp_start) / max(length - polish_um, 1e-12)
    rough_total = material_between(z, -np.inf, ramp_bottom[:, None], area)
    volumes = {"laser": 0.0}
    if instrument.laser_margin_um is not None:
        margin = instrument.laser_margin_um.value
        laser_bottom = np.where(m <= face - polish_um - margin, ramp_bottom - margin, -np.inf)
        volumes["laser"] = material_between(z, -np.inf, laser_bottom[:, None], area)
    volumes["fib_rough"] = rough_total - volumes["laser"]
    volumes["fib_polish"] = material_between(z_face, -np.inf, z_bottom, area_face)
    need = (deepest_near if instrument.sims is not None else far) + standoff_um - face
    count, consumed = imaging_reach(instrument, material, need)
    z_slices, _, area_slices = frame.sample_lateral(surface, (face, face + consumed), v_range)
    volumes["imaging"] = material_between(z_slices, -np.inf, z_bottom, area_slices)
    box_lo, box_hi = np.empty(3), np.empty(3)
    box_lo[0] = min(float(z.min()), float(z_face.min()), float(z_slices.min()))
    box_hi[0] = z_bottom
    box_lo[frame.m_axis], box_hi[frame.m_axis] = frame.scan_interval(ramp_start, face + consumed)
    box_lo[frame.v_axis], box_hi[frame.v_axis] = v_range
    rough_length = length - polish_um
    patterns = [
        Pattern("fib_rough", width, rough_length, height, 0.0, ramp_start + rough_length / 2 - m_target,
                "RegularCrossSection", "BottomToTop"),
        Pattern("fib_polish", width, polish_um, height, 0.0, face - polish_um / 2 - m_target,
                "CleaningCrossSection", "BottomToTop"),
    ]
    return Layout(plane_um=frame.to_scan(face), depth_um=height, fov_um=instrument.fov_um.value,
                  face_width_um=width, trench_length_um=length,
                  volumes_um3=volumes, imaging_count=count, imaging_depth_um=consumed, box_lo=box_lo,
                  box_hi=box_hi, clearance_um=clearance(box_lo, box_hi, geometry), patterns=patterns)


def clearance(box_lo: np.ndarray, box_hi: np.ndarray, geometry: ScanGeometry) -> float:
    """Smallest distance (um) from a milled box to the scan's four sides and its bottom.

    Negative when the box leaves the scanned region (material nobody has seen).
    """
    scan_lo, scan_hi = geometry.lo_um, geometry.hi_um
    gaps = [box_lo[1] - scan_lo[1], scan_hi[1] - box_hi[1], box_lo[2] - scan_lo[2], scan_hi[2] - box_hi[2],
            scan_hi[0] - box_hi[0]]
    return float(min(gaps))
