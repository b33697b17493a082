"""Train a roidetect model: the same code as ``roidetect train``, as a Hydra application.

    python training/train.py experiment=phantoms_cpu out=runs/phantoms-cpu

It composes the same ``configs/train.yaml`` and calls the same
:func:`roidetect.learn.train.train`. Use it for what Hydra's own command line adds:
``--cfg job`` (print the config), ``--multirun`` sweeps (e.g. ``-m optimizer.lr=3e-4,1e-3
out='runs/lr_${optimizer.lr}'``) and shell completion. Everything else: ``roidetect train``.
"""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig

from roidetect.errors import UserError
from roidetect.learn.train import train
from roidetect.resources import config_dir


@hydra.main(config_path=str(config_dir()), config_name="train", version_base=None)
def main(cfg: DictConfig) -> None:
    try:
        train(cfg)
    except UserError as exc:
        print(f"training/train.py: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
