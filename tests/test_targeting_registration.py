"""Fiducial registration: exact recovery, FRE and TRE against the error model, CSV errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from roidetect.errors import UserError
from roidetect.targeting import fit_registration, read_fiducials
from roidetect.targeting.registration import PARAMETERS

FIDUCIALS = np.array([[0, 0, 0], [200, 0, 10], [0, 150, 5], [200, 150, 20], [100, 75, 60], [50, 120, 30]], float)
TARGETS = np.array([[100, 75, 30], [300, -50, 40], [0, 0, 80], [150, 40, 15]], float)


def _transform(kind: str) -> tuple[np.ndarray, np.ndarray]:
    rotation = Rotation.from_euler("xyz", [5, -3, 40], degrees=True).as_matrix()
    matrix = {"rigid": rotation, "similarity": 1.2 * rotation,
              "affine": rotation @ np.array([[1.1, 0.05, 0], [0, 0.95, 0.02], [0.01, 0, 1.02]])}[kind]
    return matrix, np.array([1000.0, -500.0, 200.0])


@pytest.mark.parametrize("kind", list(PARAMETERS))
def test_noise_free_fiducials_recover_the_transform(kind):
    matrix, shift = _transform(kind)
    registration = fit_registration(FIDUCIALS, FIDUCIALS @ matrix.T + shift, kind)
    np.testing.assert_allclose(registration.matrix, matrix, atol=1e-9)
    np.testing.assert_allclose(registration.translation, shift, atol=1e-6)
    assert registration.fre_um < 1e-6
    if kind != "affine":
        assert np.linalg.det(registration.matrix) > 0  # a rotation, never a reflection


@pytest.mark.parametrize("kind, draws", [("rigid", 500), ("similarity", 300), ("affine", 300)])
def test_fre_and_tre_match_the_error_model_over_many_draws(kind, draws):
    """Monte Carlo: isotropic localisation noise, FLE^2 = 3 sigma^2 (FWM98's definition)."""
    rng = np.random.default_rng(11)
    matrix, shift = _transform(kind)
    truth = FIDUCIALS @ matrix.T + shift
    sigma = 0.5
    fle = np.sqrt(3) * sigma
    fre2, tre2, predicted2 = [], [], []
    for _ in range(draws):
        registration = fit_registration(FIDUCIALS, truth + rng.normal(0, sigma, truth.shape), kind)
        fre2.append(registration.fre_um ** 2)
        tre2.append(np.sum((registration.apply(TARGETS) - (TARGETS @ matrix.T + shift)) ** 2, axis=1))
        predicted2.append(registration.predicted_tre_um(TARGETS) ** 2)
    n, p = len(FIDUCIALS), PARAMETERS[kind]
    # <FRE^2> = (1 - p / 3N) FLE^2 (FWM98 eq. 10 for rigid, p = 6)
    assert np.sqrt(np.mean(fre2)) == pytest.approx(fle * np.sqrt(1 - p / (3 * n)), rel=0.05)
    # RMS TRE over the draws vs the prediction with the true FLE, and with the FLE estimated per draw
    observed = np.sqrt(np.mean(tre2, axis=0))
    np.testing.assert_allclose(observed, registration.predicted_tre_um(TARGETS, fle_um=fle), rtol=0.1)
    np.testing.assert_allclose(observed, np.sqrt(np.mean(predicted2, axis=0)), rtol=0.12)


def test_tre_is_smallest_near_the_fiducial_centroid():
    matrix, shift = _transform("rigid")
    rng = np.random.default_rng(2)
    registration = fit_registration(FIDUCIALS, FIDUCIALS @ matrix.T + shift + rng.normal(0, 0.3, FIDUCIALS.shape))
    centre = FIDUCIALS.mean(axis=0)
    tre = registration.predicted_tre_um(np.array([centre, centre + [500, 0, 0], centre + [0, 0, 500]]))
    assert tre[0] == pytest.approx(registration.fle_um / np.sqrt(len(FIDUCIALS)))  # eq. 46 at the centroid
    assert tre[0] < tre[1] and tre[0] < tre[2]


def _write(path, text: str):
    path.write_text(text)
    return path


def test_read_fiducials(tmp_path):
    rows = ["name,x_um,y_um,z_um,stage_x_um,stage_y_um,stage_z_um"]
    rows += [f"F{i},{x},{y},{z},{x + 1000},{y - 500},{z + 200}" for i, (x, y, z) in enumerate(FIDUCIALS)]
    scan, stage, names = read_fiducials(_write(tmp_path / "f.csv", "\n".join(rows)))
    np.testing.assert_allclose(scan, FIDUCIALS)
    np.testing.assert_allclose(stage - scan, np.tile([1000, -500, 200], (len(FIDUCIALS), 1)))
    assert names[0] == "F0"


@pytest.mark.parametrize("text, message", [
    ("x_um,y_um,z_um\n1,2,3\n", "missing column"),
    ("x_um,y_um,z_um,stage_x_um,stage_y_um,stage_z_um\n1,2,3,4,five,6\n", "non-numeric"),
    ("x_um,y_um,z_um,stage_x_um,stage_y_um,stage_z_um\n1,2,3,4,5,6\n1,2,3,7,8,9\n", "same scan position"),
    ("", "not a readable CSV"),
])
def test_malformed_fiducials_are_user_errors(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        read_fiducials(_write(tmp_path / "bad.csv", text))


def test_degenerate_fiducials_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="not found"):
        read_fiducials(tmp_path / "missing.csv")
    line = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 2], [3, 3, 3.0]])
    with pytest.raises(UserError, match="collinear"):
        fit_registration(line, line + 5, "rigid")
    with pytest.raises(UserError, match="coplanar"):
        fit_registration(FIDUCIALS * [1, 1, 0], FIDUCIALS, "affine")
    with pytest.raises(UserError, match="at least 5"):
        fit_registration(FIDUCIALS[:4], FIDUCIALS[:4], "affine")
