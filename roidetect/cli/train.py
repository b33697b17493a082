"""``roidetect train [KEY=VALUE ...]``: train a model from the Hydra configs in ``configs/``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from roidetect.cli.common import add_command

GROUPS = ("data", "model", "loss", "optimizer", "trainer", "experiment", "debug")


def register(subparsers: Any) -> None:
    parser = add_command(
        subparsers, "train", "train a segmentation model on annotated volumes or phantoms",
        "Train a 3D segmentation network (MONAI + Lightning) and write a model package\n"
        "(weights.safetensors + card.json) that 'roidetect predict --model' uses.\n\n"
        "Settings are Hydra overrides composed onto configs/train.yaml:\n"
        "  GROUP=OPTION        swap a whole part, e.g. model=segresnet trainer=ddp\n"
        "  KEY=VALUE           change one setting, e.g. data.path=my/dataset.json trainer.max_epochs=20\n"
        "  +KEY=VALUE          add a setting the config lacks, e.g. +trainer.limit_val_batches=2\n\n"
        "Examples:\n"
        "  roidetect train data=folder data.path=labels/dataset.json out=runs/cathode\n"
        "  roidetect train experiment=phantoms_cpu out=runs/phantoms\n"
        "  roidetect train data=folder data.path=labels out=runs/cathode --resume   (continue after a stop)\n"
        "  roidetect train data=folder data.path=labels out=runs/mine init=default  (fine-tune the default model)\n"
        "  roidetect train trainer=ddp trainer.devices=4 ...                        (several GPUs)")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = _groups_help()
    parser.add_argument("overrides", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="Hydra overrides (see above); the options below may come before or after them")
    parser.add_argument("--resume", action="store_true",
                        help="continue the run in out=... from its last checkpoint (same as resume=true)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing run folder (same as overwrite=true)")
    parser.add_argument("--show-config", action="store_true", help="print the composed config and exit")
    parser.set_defaults(handler=run, print_help=parser.print_help)


def _groups_help() -> str:
    """The config groups and their options, read from the installed config folder."""
    from roidetect.resources import config_dir

    root = config_dir()
    lines = ["config groups (GROUP=OPTION):"]
    for group in GROUPS:
        options = sorted(p.stem for p in (root / group).glob("*.yaml") if not p.stem.startswith("_"))
        lines.append(f"  {group:<11} {', '.join(options)}")
    lines.append("settings and defaults: configs/train.yaml and configs/<group>/<option>.yaml; "
                 "see docs/training.md")
    return "\n".join(lines)


_FLAGS = {"--resume": "resume", "--overwrite": "overwrite", "--show-config": "show_config", "--quiet": "quiet",
          "-q": "quiet", "--help": "help_requested", "-h": "help_requested"}


def _split_flags(args: argparse.Namespace) -> list[str]:
    """Take the options given after the first override out of the override list."""
    from roidetect.errors import UserError

    args.help_requested = False
    overrides = []
    for item in args.overrides:
        if item in _FLAGS:
            setattr(args, _FLAGS[item], True)
        elif item.startswith("-"):
            raise UserError(f"unknown option {item}; options: {', '.join(sorted(set(_FLAGS)))}; "
                            "settings are KEY=VALUE")
        else:
            overrides.append(item)
    return overrides


def run(args: argparse.Namespace) -> int:
    from omegaconf import OmegaConf

    from roidetect.config import compose_config
    from roidetect.learn.train import train

    overrides = _split_flags(args)
    if args.help_requested:
        args.print_help()
        return 0
    flags = {"resume": args.resume, "overwrite": args.overwrite, "quiet": args.quiet}
    overrides += [f"{key}=true" for key, on in flags.items() if on]
    cfg = compose_config("train", overrides)
    if args.show_config:
        print(OmegaConf.to_yaml(cfg))
        return 0
    try:
        package = train(cfg)
    except KeyboardInterrupt:
        print(f"roidetect train: interrupted; checkpoints are in {cfg.out}/checkpoints; run the same command "
              "with --resume to continue", file=sys.stderr)
        return 130
    if package is not None and not args.quiet:
        print(f"model package: {package}")
    return 0
