"""Pictures from a trained GAN: ``python src/generate.py run_dir=... | ckpt_path=...``.

A thin script over :func:`capsgan.generation.run_generate`; the keys are documented in
``conf/generate.yaml``. A :class:`capsgan.errors.UserError` is printed as one paragraph
(``HYDRA_FULL_ERROR=1`` shows the traceback) and exits with code 2.
"""

import os
import sys

import hydra
from omegaconf import DictConfig

from capsgan.errors import UserError
from capsgan.generation import run_generate


@hydra.main(version_base="1.3", config_path="../conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    try:
        run_generate(cfg)
    except UserError as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"Error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
