"""``python -m roidetect`` runs the ``roidetect`` command."""

from __future__ import annotations

import sys

from roidetect.cli import main

sys.exit(main())
