"""Pictures from a trained GAN: ``python src/generate.py run_dir=... | ckpt_path=...``.
The keys are documented in ``conf/generate.yaml``."""

import hydra
from omegaconf import DictConfig

from capsgan.errors import user_errors
from capsgan.generation import run_generate


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    with user_errors(output_key="out_dir"):
        run_generate(cfg)


if __name__ == "__main__":
    main()
