"""Train a GAN: ``python src/train.py discriminator=capsule -m lr=1e-4,2e-4``.
The configuration lives in ``conf/``."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from capsgan import cli
from capsgan.errors import user_errors
from capsgan.resume import MULTIRUN_FLAGS, resume_argv
from capsgan.training import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    cli.setup()  # again here: joblib / submitit run jobs in other processes
    return run(cfg)


if __name__ == "__main__":
    # Hydra's argparse takes overrides as one positional list, so an override *after* -m
    # (`discriminator=capsule -m lr=1e-4,2e-4`) is rejected; move the flag to the front.
    if any(a in MULTIRUN_FLAGS for a in sys.argv[2:]):
        flags = [a for a in sys.argv[1:] if a in MULTIRUN_FLAGS]
        sys.argv[1:] = flags[:1] + [a for a in sys.argv[1:] if a not in MULTIRUN_FLAGS]
    cli.setup(sys.argv[1:])
    with user_errors():  # a resume composes from the run's saved overrides (capsgan.resume)
        sys.argv[1:] = resume_argv(sys.argv[1:], Path(__file__).resolve().parents[1] / "conf")
    main()
