"""roidetect: find defects in 3D scans of battery electrodes and plan where to mill them.

The numpy layer (``volume``, ``labels``, ``synth``, ``detect``, ``targeting``, ``evaluate``)
never imports torch; the torch layer lives in ``roidetect.learn`` and ``roidetect.inference``.
"""

from __future__ import annotations

__version__ = "0.1.0"
