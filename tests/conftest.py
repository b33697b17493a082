"""Shared fixtures: tiny seeded volumes made in memory, no network, no GPU."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def small_scan(rng: np.random.Generator) -> np.ndarray:
    """A 32 x 40 x 48 uint16 volume: bright spheres on a dark, noisy background."""
    z, y, x = np.mgrid[:32, :40, :48]
    image = np.full((32, 40, 48), 200.0)
    for cz, cy, cx, r in [(10, 12, 14, 6), (20, 28, 30, 8), (16, 10, 38, 5)]:
        image[(z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r] = 3000.0
    image += rng.normal(0, 50, image.shape)
    return np.clip(image, 0, 65535).astype(np.uint16)
