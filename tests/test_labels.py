"""Label maps: reading annotations of another label scheme as roidetect's."""

from __future__ import annotations

import numpy as np
import pytest

from roidetect.errors import UserError
from roidetect.labels import IGNORE, check_label_map, parse_label_map, relabel, relabelled
from roidetect.volume import Volume


def test_parse_label_map_reads_pairs_and_refuses_anything_else():
    assert parse_label_map("0=255, 1=0,2=1,3=2") == {0: IGNORE, 1: 0, 2: 1, 3: 2}
    for text in ("", "1", "1=4", "1=1,1=2", "-1=0", "a=1", "1=0.5"):
        with pytest.raises(UserError, match="--label-map"):
            parse_label_map(text)
    assert check_label_map({"7": 3}) == {7: 3}
    with pytest.raises(UserError, match="label_map"):
        check_label_map([7, 3])


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.uint16, np.float32])
def test_relabel_swaps_listed_values_at_once_and_keeps_the_rest(dtype):
    values = np.array([0, 1, 2, 3, 5], dtype=dtype)
    out = relabel(values, {0: IGNORE, 1: 0, 2: 1, 3: 2})  # a chain 2 -> 1 -> 0 must not happen
    np.testing.assert_array_equal(out, [IGNORE, 0, 1, 2, 5])
    assert values[0] == 0  # the input is not changed
    assert relabel(values, {}) is values


def test_a_relabelled_volume_reads_mapped_blocks():
    data = np.arange(24, dtype=np.uint16).reshape(2, 3, 4) % 4
    volume = relabelled(Volume(data, (0.1, 0.1, 0.1)), {0: 3, 3: 0})
    assert volume.shape == (2, 3, 4) and volume.dtype == np.uint16
    swapped = np.where(data == 0, 3, np.where(data == 3, 0, data))
    np.testing.assert_array_equal(volume[:, 1:, :2], swapped[:, 1:, :2])
    np.testing.assert_array_equal(volume.numpy(), swapped)
