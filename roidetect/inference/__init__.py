"""Inference: a scan in, a prediction folder out (see ``docs/inference.md``).

``predict`` is the entry point. The network path (``engine``, ``network``, ``model``,
``network_run``) needs torch; the classical path and the output writers do not.
"""

from __future__ import annotations

from roidetect.inference.predict import CLASSICAL, predict

__all__ = ["CLASSICAL", "predict"]
