"""Targeting: from per-defect detections to a ranked, costed plan of milling sites.

Pure numpy/pandas (never imports torch). The pieces, in pipeline order:

- :mod:`~roidetect.targeting.prediction`: read a prediction folder.
- :mod:`~roidetect.targeting.candidates`: detections -> candidate sites (one field of view each).
- :mod:`~roidetect.targeting.layout`: where and how deep to mill, removed volumes, milled box.
- :mod:`~roidetect.targeting.costs`: minutes per step (laser, FIB rough, FIB polish, imaging).
- :mod:`~roidetect.targeting.scoring`: score components and their weighted mean.
- :mod:`~roidetect.targeting.selection`: non-destructive choice within the budget, visit order.
- :mod:`~roidetect.targeting.registration`: fiducial registration, FRE and predicted TRE.
- :mod:`~roidetect.targeting.plan`: all of the above as :func:`plan` / :func:`plan_sites`.
- :mod:`~roidetect.targeting.export`, :mod:`~roidetect.targeting.openfibsem`: the output files.
- :mod:`~roidetect.targeting.pipeline`: :func:`suggest`, folder in, folder out.
"""

from __future__ import annotations

from roidetect.targeting.geometry import ScanGeometry, SurfaceMap
from roidetect.targeting.instrument import Instrument
from roidetect.targeting.params import TargetingParams
from roidetect.targeting.pipeline import suggest
from roidetect.targeting.plan import Plan, Site, plan, plan_sites
from roidetect.targeting.prediction import Prediction, read_prediction
from roidetect.targeting.registration import Registration, fit_registration, read_fiducials

__all__ = [
    "Instrument", "Plan", "Prediction", "Registration", "ScanGeometry", "Site", "SurfaceMap", "TargetingParams",
    "fit_registration", "plan", "plan_sites", "read_fiducials", "read_prediction", "suggest",
]
