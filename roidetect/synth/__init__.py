"""Annotated electrode phantoms: microstructure, defects with exact ground truth, CT imaging.

- :func:`make_phantom` builds one phantom in memory (pure, seeded; fast enough to call inside
  DataLoader workers).
- :func:`write_dataset` writes N of them as a dataset folder (docs/architecture.md), in
  parallel.
- Presets and randomisation ranges: :mod:`roidetect.synth.presets`; every parameter:
  :mod:`roidetect.synth.params`.

This package is numpy/scipy only; it never imports torch.
"""

from __future__ import annotations

from roidetect.synth.dataset import write_dataset
from roidetect.synth.geometry import parse_phases
from roidetect.synth.params import SynthParams, parameter_names
from roidetect.synth.phantom import Phantom, make_phantom
from roidetect.synth.presets import PRESETS, preset_names

__all__ = ["PRESETS", "Phantom", "SynthParams", "make_phantom", "parameter_names", "parse_phases", "preset_names",
           "write_dataset"]
