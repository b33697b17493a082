"""Delamination visibility: enclosed voids imaged as vacuum, gaps widened to the resolution,
faint gaps kept in the phantom but labelled not annotated."""

from __future__ import annotations

import numpy as np
import pytest

from roidetect.labels import CRACK, DELAMINATION, IGNORE, PORE
from roidetect.synth import make_phantom
from roidetect.synth.defects import DefectSet, unlabel
from roidetect.synth.params import SynthParams
from roidetect.synth.phantom import enclosed_voids, resolvable_gaps
from roidetect.synth.phases import ACTIVE, BINDER, VOID
from roidetect.synth.visibility import MAX_WALL_VOX, gap_signals, gap_walls


def test_enclosed_voids_are_defect_only_components() -> None:
    phases = np.full((12, 12, 12), ACTIVE, np.uint8)
    labels = np.zeros(phases.shape, np.uint8)
    phases[:, :, :2] = VOID                      # open pore space (not a defect)
    phases[5:7, 5:7, 5:7] = VOID                 # a pore inside the particle
    labels[5:7, 5:7, 5:7] = PORE
    phases[2, 3:10, 2:8] = VOID                  # a crack running out into the open pores
    labels[2, 3:10, 2:8] = CRACK
    phases[9, 8, 8] = VOID                       # touches the pore only by an edge: its own component
    labels[9, 8, 8] = DELAMINATION
    vacuum = enclosed_voids(phases, labels)
    assert vacuum[5:7, 5:7, 5:7].all() and vacuum[9, 8, 8]
    assert not vacuum[2, 3:10, 2:8].any()        # resin flows in through the open end
    assert not vacuum[:, :, :2].any()
    assert vacuum.sum() == 8 + 1


def test_resolvable_gaps_shift_narrow_ranges_up_to_the_resolution() -> None:
    spacing = (0.05, 0.05, 0.05)
    params = SynthParams()
    wide = resolvable_gaps(params, spacing)     # default resolution: 224 nm = 4.48 voxels
    assert wide.defects.delamination_gap_vox == pytest.approx((4.48, 7.48))
    assert wide.defects.collector_gap_vox == pytest.approx((4.48, 7.48))
    assert wide.defects.delamination_wall_vox == pytest.approx(2.24)  # the wall behind a gap: half
    sharp = SynthParams(imaging=params.imaging.__class__(resolution_um=0.075))
    assert resolvable_gaps(sharp, spacing).defects.delamination_gap_vox == (2.0, 5.0)  # 1.5 voxels: no change
    assert resolvable_gaps(sharp, spacing).defects.delamination_wall_vox == 2.0
    off = SynthParams(defects=params.defects.__class__(delamination_min_gap_fwhm=0.0))
    assert resolvable_gaps(off, spacing).defects.delamination_gap_vox == (2.0, 5.0)
    blurry = SynthParams(imaging=params.imaging.__class__(resolution_um=5.0))
    assert resolvable_gaps(blurry, spacing).defects.delamination_gap_vox[0] == 10.0  # capped
    assert resolvable_gaps(blurry, spacing).defects.delamination_wall_vox == 3.0


def test_unlabel_removes_and_renumbers() -> None:
    instances = np.array([[1, 2, 3, 0, 2]], np.uint32)
    labels = np.array([[1, 3, 2, 0, 3]], np.uint8)
    records = [{"id": 1, "class_id": 1}, {"id": 2, "class_id": 3, "signal": 0.2}, {"id": 3, "class_id": 2}]
    kept, removed = unlabel(DefectSet(labels, instances, records), [2], fill=255)
    assert kept.instances.tolist() == [[1, 0, 2, 0, 0]]
    assert kept.labels.tolist() == [[1, 255, 2, 0, 255]]
    assert [r["id"] for r in kept.records] == [1, 2] and kept.records[1]["class_id"] == 2
    assert removed == [{"id": 2, "class_id": 3, "signal": 0.2}]
    assert records[1]["id"] == 2  # the input's records are left as they were


@pytest.fixture(scope="module")
def pair():
    """One phantom labelled with every gap and the same one with none labelled."""
    settings = dict(shape=(64, 64, 64), seed=11, preset="anode", delamination_rate=1.0)
    return (make_phantom(delamination_min_signal=0.0, **settings),
            make_phantom(delamination_min_signal=100.0, **settings))


def test_faint_gaps_stay_in_the_scan_but_leave_the_truth(pair) -> None:
    every, none = pair
    assert np.array_equal(every.image, none.image)
    assert np.array_equal(every.phases, none.phases)
    gaps = [d for d in every.manifest["defects"] if d["class_id"] == DELAMINATION]
    assert gaps and every.manifest["unannotated"] == []
    assert not (none.labels == DELAMINATION).any()
    assert np.array_equal(none.labels == IGNORE, every.labels == DELAMINATION)  # not annotated
    assert none.manifest["counts"]["delamination"] == 0
    assert sorted(u["signal"] for u in none.manifest["unannotated"]) == sorted(d["signal"] for d in gaps)
    assert sorted(u.get("side", "") for u in none.manifest["unannotated"]) == sorted(d.get("side", "") for d in gaps)
    # the other defects are untouched and renumbered 1..N in the manifest's order
    assert np.array_equal(every.labels == PORE, none.labels == PORE)
    assert none.instances.max() == len(none.manifest["defects"])
    for entry in none.manifest["defects"]:
        assert (none.instances == entry["id"]).sum() == entry["voxels"]


def test_signal_grows_with_photons() -> None:
    settings = dict(shape=(64, 64, 64), seed=3, preset="anode", delamination_rate=1.0, delamination_min_signal=0.0)
    signals = []
    for photons in (500.0, 50000.0):
        phantom = make_phantom(photons=photons, **settings)
        signals.append(np.mean([d["signal"] for d in phantom.manifest["defects"] if d["class_id"] == DELAMINATION]))
    assert signals[0] > 0 and signals[1] > 1.5 * signals[0]


def test_gap_signal_is_the_drop_over_the_random_spread() -> None:
    rng = np.random.default_rng(0)
    phases = np.full((40, 40, 40), BINDER, np.uint8)
    filled = 1000.0 + rng.normal(0.0, 10.0, phases.shape)
    other = 1000.0 + rng.normal(0.0, 10.0, phases.shape)   # independent noise of the same spread
    instances = np.zeros(phases.shape, np.uint32)
    instances[10:20, 10:20, 10] = 1
    instances[25:30, 25:30, 25] = 2
    image = filled - 25.0 * (instances == 1) - 5.0 * (instances == 2)
    signals = gap_signals(image, filled, other, instances, [1, 2], phases)
    assert signals[1] == pytest.approx(2.5, rel=0.05)
    assert signals[2] == pytest.approx(0.5, rel=0.05)


def test_gap_wall_is_the_thinnest_solid_towards_the_open_pores() -> None:
    phases = np.full((16, 16, 16), BINDER, np.uint8)
    labels = np.zeros(phases.shape, np.uint8)
    instances = np.zeros(phases.shape, np.uint32)
    phases[:, :, :2] = VOID                                     # open pore space: x < 2
    phases[4:8, 4:8, 5:7] = VOID                                # gap 1: three CBD voxels (x 2-4) before the pores
    phases[4:8, 4:8, 11] = VOID                                 # gap 2: nine (x 2-10)...
    phases[12, 12, 3:12] = VOID                                 # ...but here it reaches x = 3: one voxel (x 2)
    labels[phases == VOID] = DELAMINATION
    labels[:, :, :2] = 0
    instances[4:8, 4:8, 5:7] = 1
    instances[4:8, 4:8, 11] = instances[12, 12, 3:12] = 2       # one gap in two pieces
    phases[0, 0, 8] = VOID                                      # a pore (labelled) is not open pore space
    labels[0, 0, 8] = PORE
    walls = gap_walls(phases, labels, instances, [1, 2])
    assert walls == {1: 3.0, 2: 1.0}
    assert gap_walls(np.full(phases.shape, BINDER, np.uint8), labels, instances, [1]) == {1: MAX_WALL_VOX}
    phases[:, :, :2] = BINDER
    phases[:, :, 15] = VOID                                     # pores beyond the maximum from gap 1 only
    assert gap_walls(phases, labels, instances, [1, 2]) == {1: MAX_WALL_VOX, 2: 3.0}


def test_receded_gap_is_measured_against_the_cbd_not_the_particle() -> None:
    """A particle that shrank away from CBD as dark as the gap looks merely smaller: no signal."""
    settings = dict(shape=(64, 64, 64), seed=5, preset="anode", delamination_rate=2.0, delamination_min_signal=0.0,
                    delamination_recession_probability=1.0, collector=False)
    signals = {}
    for mu_binder in (0.0, 0.4):
        phantom = make_phantom(mu_binder=mu_binder, **settings)
        signals[mu_binder] = [d["signal"] for d in phantom.manifest["defects"] if d["class_id"] == DELAMINATION]
    assert signals[0.4] and len(signals[0.0]) == len(signals[0.4])
    assert np.mean(signals[0.4]) > 1.0
    assert np.mean(np.abs(signals[0.0])) < 0.25 * np.mean(signals[0.4])


def test_gaps_walled_in_behind_thin_cbd_leave_the_truth_on_the_cbd_side_only() -> None:
    """delamination_min_wall_fwhm unlabels CBD-side gaps whose wall is under that many resolutions."""
    settings = dict(shape=(64, 64, 64), seed=5, preset="anode", delamination_rate=2.0, delamination_min_signal=0.0,
                    delamination_recession_probability=0.5, collector=False)
    every = make_phantom(**settings)
    walled = make_phantom(delamination_min_wall_fwhm=1.0, **settings)
    assert np.array_equal(every.image, walled.image)
    resolution_vox = every.manifest["imaging"]["resolution_um_used"] / every.spacing_um[0]
    gaps = [d for d in every.manifest["defects"] if d["class_id"] == DELAMINATION]
    thin = [d for d in gaps if d["side"] == "binder" and d["wall_vox"] < resolution_vox]
    assert thin and any(d["side"] == "particle" for d in gaps)
    assert walled.manifest["counts"]["delamination"] == len(gaps) - len(thin)
    assert sorted(u["wall_vox"] for u in walled.manifest["unannotated"]) == sorted(d["wall_vox"] for d in thin)
    assert {u["why"] for u in walled.manifest["unannotated"]} == {"thin wall"}
    for entry in walled.manifest["defects"]:
        if entry["class_id"] == DELAMINATION:
            assert entry["side"] == "particle" or entry["wall_vox"] >= resolution_vox
    unlabelled = np.isin(every.instances, [d["id"] for d in thin])
    assert (walled.labels[unlabelled] == IGNORE).all()
    assert np.array_equal(walled.labels == IGNORE, unlabelled)
