"""The HTML report of a prediction (and its milling sites): figures and one self-contained page.

numpy and matplotlib only (never torch). Modules:

- :mod:`~roidetect.report.inputs`: open a prediction folder, its scan and a sites folder;
- :mod:`~roidetect.report.views`: focus point, windows, planes, overlays, z-projection (numpy);
- :mod:`~roidetect.report.figures`: the matplotlib figures;
- :mod:`~roidetect.report.html`: the page's building blocks (inline CSS, data URIs);
- :mod:`~roidetect.report.build`: :func:`write_report`, which puts them together.
"""

from __future__ import annotations

from roidetect.report.build import figures_folder, write_report

__all__ = ["figures_folder", "write_report"]
