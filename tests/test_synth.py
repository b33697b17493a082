"""Phantom invariants: every class present, labels match the manifest, pores enclosed, cracks thin,
delaminations on interfaces, seeded determinism, parameter checking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from roidetect.errors import UserError
from roidetect.labels import CLASS_IDS, CRACK, DEFECT_CLASSES, DELAMINATION, IGNORE, PORE
from roidetect.surface import depth_below_surface, surface_from_mask
from roidetect.synth import make_phantom
from roidetect.synth.phases import BINDER, COLLECTOR, VOID
from roidetect.synth.presets import RANGES, get_preset, preset_probabilities

CONNECT26 = np.ones((3, 3, 3), dtype=bool)


@pytest.fixture(scope="module", params=["cathode", "anode", "nmc-real"])
def phantom(request):
    return make_phantom(shape=(64, 64, 64), seed=7, preset=request.param)


@pytest.fixture(scope="module")
def collector_phantom():
    return make_phantom(shape=(64, 64, 64), seed=2, collector=True, collector_delamination_probability=1.0)


def _defects(phantom, class_id):
    return [d for d in phantom.manifest["defects"] if d["class_id"] == class_id]


def test_every_class_present_small(phantom):
    # The real NMC geometry's CBD is a thin web: a gap with a CBD wall behind it is rare in
    # 64^3 (test_every_class_present_default_128_other_presets finds them at 128^3).
    expected = ("pore", "crack") if phantom.manifest["preset"] == "nmc-real" else ("pore", "crack", "delamination")
    assert {PORE, CRACK} <= set(np.unique(phantom.labels))
    assert all(phantom.manifest["counts"][name] > 0 for name in expected)


def test_every_class_present_default_128():
    phantom = make_phantom(seed=0)
    assert phantom.image.shape == (128, 128, 128)
    assert set(np.unique(phantom.labels)) - {IGNORE} == {0, *DEFECT_CLASSES}


@pytest.mark.parametrize("preset", ["anode", "nmc-real"])
def test_every_class_present_default_128_other_presets(preset):
    phantom = make_phantom(seed=0, preset=preset, shape=(128, 128, 128))
    assert set(np.unique(phantom.labels)) - {IGNORE} == {0, *DEFECT_CLASSES}


def test_labels_match_manifest(phantom):
    entries = phantom.manifest["defects"]
    ids = sorted(np.unique(phantom.instances[phantom.instances > 0]).tolist())
    assert ids == [d["id"] for d in entries] == list(range(1, len(entries) + 1))
    annotated = (phantom.labels > 0) & (phantom.labels != IGNORE)
    np.testing.assert_array_equal(annotated, phantom.instances > 0)
    for entry in entries:
        mask = phantom.instances == entry["id"]
        assert mask.sum() == entry["voxels"]
        assert entry["class_id"] == CLASS_IDS[entry["class"]]
        assert np.all(phantom.labels[mask] == entry["class_id"])
        np.testing.assert_allclose(np.argwhere(mask).mean(axis=0), entry["centroid_vox"], atol=1e-2)
        np.testing.assert_allclose(np.asarray(entry["centroid_vox"]) * phantom.spacing_um, entry["centroid_um"],
                                   atol=1e-4)


def test_defect_voxels_are_void_in_the_phase_map(phantom):
    defect = phantom.labels > 0
    assert np.all(phantom.phases[defect] == VOID)
    assert np.all(phantom.particles[defect] == 0)
    assert not phantom.solid[defect].any()


def test_pores_are_enclosed_by_solid(phantom):
    components, _ = ndimage.label(phantom.phases == VOID, structure=CONNECT26)
    sizes = np.bincount(components.ravel())
    for entry in _defects(phantom, PORE):
        mask = phantom.instances == entry["id"]
        ids = np.unique(components[mask])
        assert len(ids) == 1 and sizes[ids[0]] == mask.sum(), f"pore {entry['id']} touches other void"
        shell = ndimage.binary_dilation(mask, CONNECT26) & ~mask
        assert phantom.solid[shell].all()
        lo, hi = phantom.params.defects.pore_radius_vox
        spread = phantom.params.defects.pore_elongation
        assert lo * (1 - spread) <= entry["radius_vox"] <= hi * (1 + spread)


def test_cracks_are_thin_sheets(phantom):
    cracks = _defects(phantom, CRACK)
    assert cracks
    for entry in cracks:
        points = np.argwhere(phantom.instances == entry["id"]).astype(float)
        eigenvalues = np.linalg.eigvalsh(np.cov(points, rowvar=False))
        assert 4 * np.sqrt(eigenvalues[0]) <= 3.0 + 1e-9
        assert 4 * np.sqrt(eigenvalues[2]) > 3 * 4 * np.sqrt(eigenvalues[0])  # a sheet, not a blob


def test_particle_delaminations_lie_between_particle_and_binder(phantom):
    for entry in _defects(phantom, DELAMINATION):
        mask = phantom.instances == entry["id"]
        around = ndimage.binary_dilation(mask, CONNECT26) & ~mask
        assert entry["interface"] == "particle-binder"
        assert (phantom.particles[around] == entry["host_particle"]).any()
        assert (phantom.phases[around] == BINDER).any()


@pytest.mark.parametrize("wall", [2.0, 4.0])
@pytest.mark.parametrize("side", ["binder", "particle"])
def test_particle_delaminations_keep_a_cbd_wall_towards_the_pores(wall, side):
    phantom = make_phantom(shape=(64, 64, 64), seed=5, preset="anode", delamination_rate=2.0,
                           delamination_min_signal=0.0, delamination_min_gap_fwhm=0.0, delamination_wall_vox=wall,
                           delamination_recession_probability=float(side == "particle"))
    gaps = phantom.labels == DELAMINATION
    assert gaps.sum() > 100
    assert {d["side"] for d in _defects(phantom, DELAMINATION)} == {side}
    pore_space = (phantom.phases == VOID) & (phantom.labels == 0)
    assert ndimage.distance_transform_edt(~pore_space)[gaps].min() > wall
    assert all(d["wall_vox"] > wall - 1 for d in _defects(phantom, DELAMINATION))  # the manifest's record of it


def test_receding_particle_leaves_its_gap_inside_its_old_outline():
    phantom = make_phantom(shape=(64, 64, 64), seed=5, preset="anode", delamination_rate=2.0,
                           delamination_min_signal=0.0, delamination_recession_probability=1.0)
    before = make_phantom(shape=(64, 64, 64), seed=5, preset="anode", delamination_rate=0.0, pore_rate=0.0,
                          crack_rate=0.0, min_per_class=0)
    for entry in _defects(phantom, DELAMINATION):
        mask = phantom.instances == entry["id"]
        assert (before.particles[mask] == entry["host_particle"]).all()


def test_lifted_films_lie_between_their_particle_and_a_cbd_film():
    phantom = make_phantom(shape=(64, 64, 64), seed=5, preset="cathode", delamination_rate=2.0,
                           delamination_min_signal=0.0, delamination_film_probability=1.0)
    before = make_phantom(shape=(64, 64, 64), seed=5, preset="cathode", delamination_rate=0.0, pore_rate=0.0,
                          crack_rate=0.0, min_per_class=0)
    films = [d for d in _defects(phantom, DELAMINATION) if d["interface"] == "particle-binder"]
    assert len(films) >= 3 and {d["side"] for d in films} == {"film"}
    # measured against the film lying on the particle: the gap's emptied CBD darkens the scan
    assert min(d["signal"] for d in films) > 1.0
    for entry in films:
        mask = phantom.instances == entry["id"]
        assert 2.0 <= entry["film_vox"] <= 4.0
        assert (phantom.phases[mask] == VOID).all()
        assert (before.particles[mask] == 0).all()  # the particle keeps its outline; the gap lies outside it
        around = ndimage.binary_dilation(mask, CONNECT26) & ~mask
        assert (phantom.particles[around] == entry["host_particle"]).any()
        # the film: CBD that was pore space before, beside the gap
        assert ((phantom.phases[around] == BINDER) & (before.phases[around] == VOID)).any()


def test_collector_delamination(collector_phantom):
    gaps = [d for d in collector_phantom.manifest["defects"] if d.get("interface") == "coating-collector"]
    assert gaps
    mask = collector_phantom.instances == gaps[0]["id"]
    below = np.roll(mask, 1, axis=0) & ~mask
    assert (collector_phantom.phases[ndimage.binary_dilation(mask, CONNECT26)] == COLLECTOR).any()
    assert (collector_phantom.phases[below] == COLLECTOR).sum() > 0


def _striped_coating():
    """CBD and 4-voxel pore stripes along x on a collector at z >= 20; a collector gap of 3 voxels."""
    from roidetect.synth.microstructure import Microstructure
    from roidetect.synth.params import DefectParams

    phases = np.full((24, 40, 40), BINDER, dtype=np.uint8)
    phases[20:] = COLLECTOR
    pore = (np.arange(40) // 4) % 2 == 0
    phases[:20, :, pore] = VOID
    micro = Microstructure(phases, np.zeros(phases.shape, np.int32), np.zeros(1, np.uint8),
                           collector_top=np.full((40, 40), 20))
    params = DefectParams(pore_rate=0, crack_rate=0, delamination_rate=0, min_per_class=0,
                          collector_delamination_probability=1.0, collector_gap_vox=(3.0, 3.0))
    return micro, pore, params


def test_collector_gap_takes_in_the_pores_of_its_layer():
    """The gap is the whole layer above the collector, one label over CBD and pore alike."""
    from roidetect.synth.defects import carve_defects

    micro, pore, params = _striped_coating()
    defects = carve_defects(micro, params, np.random.default_rng(0))
    gap = defects.labels == DELAMINATION
    assert [r["interface"] for r in defects.records] == ["coating-collector"]
    footprint = gap[19]
    assert footprint[:, pore].sum() > 50 and footprint[:, ~pore].sum() > 50  # under both
    assert (micro.phases[gap] == VOID).all()
    # Right above the collector, a pore stripe flanked by gap on both sides is gap too.
    flanked = [(y, a) for y in range(40) for a in range(8, 32, 8) if footprint[y, a - 1] and footprint[y, a + 4]]
    assert flanked
    assert all(footprint[y, a:a + 4].all() for y, a in flanked)


def test_collector_gap_keeps_out_of_other_defects_reservation():
    """Reserved voxels of earlier defects (3-voxel columns every 10, over pore and CBD) stay out of the gap."""
    from roidetect.synth.defects import _Carver

    micro, _, params = _striped_coating()
    carver = _Carver(micro, params, np.random.default_rng(1))
    every_tenth = (np.arange(40) % 10) < 3
    carver.reserved[15:20] = every_tenth[:, None] & every_tenth[None, :]
    earlier = carver.reserved.copy()
    assert carver.collector_delamination()
    gap = carver.labels == DELAMINATION
    assert (ndimage.binary_dilation(earlier[19]) & gap[19]).any()  # the gap reaches the reserved columns
    assert not (earlier & gap).any()


def test_depth_is_measured_below_the_top_surface(phantom):
    surface = surface_from_mask(phantom.solid, phantom.spacing_um)
    for entry in phantom.manifest["defects"]:
        z, y, x = entry["centroid_vox"]
        expected = depth_below_surface(surface, [z], [y], [x], phantom.spacing_um)[0]
        assert entry["depth_um"] == pytest.approx(expected, abs=1e-4)


def test_same_seed_same_volume_and_different_seeds_differ():
    a = make_phantom(shape=(48, 48, 48), seed=5)
    b = make_phantom(shape=(48, 48, 48), seed=5)
    c = make_phantom(shape=(48, 48, 48), seed=6)
    for name in ("image", "labels", "instances", "phases"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert a.manifest == b.manifest
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.labels, c.labels)


def test_imaging_change_keeps_the_microstructure():
    a = make_phantom(shape=(40, 40, 40), seed=1)
    b = make_phantom(shape=(40, 40, 40), seed=1, photons=500.0, bit_depth=8)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.image.dtype == np.uint16 and b.image.dtype == np.uint8


def test_randomise_draws_within_ranges():
    phantoms = [make_phantom(shape=(40, 40, 40), seed=s, preset="any", randomise=True) for s in range(4)]
    lo, hi = RANGES["photons"][1:]
    for p in phantoms:
        assert lo <= p.params.imaging.photons <= hi
        assert p.params.imaging.ct_model in RANGES["ct_model"][1]
        assert p.image.dtype in (np.uint8, np.uint16)
    assert len({p.params.imaging.photons for p in phantoms}) == len(phantoms)


def test_geometry_from_array_splits_touching_particles():
    z, y, x = np.mgrid[:40, :40, :40]
    labels = np.zeros((40, 40, 40), dtype=np.uint8)
    labels[(z - 20) ** 2 + (y - 20) ** 2 + (x - 20) ** 2 < 49] = 2  # binder around the contact
    for cx in (12, 27):
        labels[(z - 20) ** 2 + (y - 20) ** 2 + (x - cx) ** 2 < 64] = 1
    phantom = make_phantom(geometry=labels, phases={"particle": 1, "binder": 2}, seed=0, surface=False)
    assert phantom.image.shape == (40, 40, 40)
    assert len(np.unique(phantom.particles[phantom.particles > 0])) == 2


@pytest.mark.parametrize("x_range", [(0.0, 0.5), (0.5, 1.0)])
def test_geometry_blocks_stay_inside_their_x_range(x_range):
    width = 64
    for seed in range(6):
        phantom = make_phantom(preset="nmc-real", shape=(32, 32, 32), seed=seed, geometry_x_range=x_range)
        x0 = phantom.manifest["geometry"]["origin_zyx"][2]
        assert x_range[0] * 256 <= x0 and x0 + 32 <= x_range[1] * 256
    with pytest.raises(UserError, match="geometry_x_range"):
        make_phantom(preset="nmc-real", shape=(32, 32, width), seed=0, geometry_x_range=(0.0, 0.2))


@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "cathodes"}, "unknown preset"),
    ({"photonz": 3}, "did you mean photons"),
    ({"photons": -1}, "photons"),
    ({"ct_model": "cone"}, "ct_model"),
    ({"pore_radius_vox": [5, 2]}, "first value"),
    ({"shape": (8, 64, 64)}, "at least"),
    ({"voxel_size_um": -1.0}, "voxel size"),
    ({"geometry": np.zeros((20, 20, 20), np.uint8)}, "phase values"),
])
def test_bad_arguments_are_user_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        make_phantom(**{"shape": (32, 32, 32), **kwargs})


def test_preset_weights_steer_the_any_draw():
    rng = np.random.default_rng(0)
    drawn = [get_preset("any", rng, {"anode": 1.0}).name for _ in range(20)]
    assert set(drawn) == {"anode"}
    rng = np.random.default_rng(0)
    drawn = [get_preset("any", rng, {"cathode": 1, "anode": 3, "nmc-real": 0}).name for _ in range(400)]
    assert "nmc-real" not in drawn and 0.65 < drawn.count("anode") / len(drawn) < 0.85
    with pytest.raises(UserError, match="need preset 'any'"):
        get_preset("cathode", None, {"anode": 1.0})


def test_preset_weights_reach_the_phantom():
    for seed in range(3):
        phantom = make_phantom(shape=(32, 32, 32), seed=seed, preset="any", preset_weights={"nmc-real": 1})
        assert phantom.manifest["preset"] == "nmc-real"


@pytest.mark.parametrize("weights, message", [
    ({"anodes": 1}, "name 'anodes'"),
    ({"anode": -1, "cathode": 1}, "non-negative"),
    ({"anode": 0}, "not all 0"),
    ({"anode": float("nan")}, "non-negative"),
])
def test_bad_preset_weights_are_user_errors(weights, message):
    with pytest.raises(UserError, match=message):
        preset_probabilities(weights)
