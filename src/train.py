"""Train a GAN: ``python src/train.py discriminator=capsule -m lr=1e-4,2e-4``.

A thin script over :mod:`capsgan.training`; the configuration lives in ``conf/``.
"""

import hydra
from omegaconf import DictConfig

from capsgan.training import run


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run(cfg)


if __name__ == "__main__":
    main()
