"""GAN battle, the Generative Adversarial Metric: ``python src/battle.py a=<run> b=<run>``.
The keys are in ``conf/battle.yaml``, the rule in docs/evaluation.md."""

import sys

import hydra
from omegaconf import DictConfig

from capsgan.cli import bracket_lists
from capsgan.errors import user_errors
from capsgan.gam import run_battle


@hydra.main(version_base="1.3", config_path="../conf", config_name="battle")
def main(cfg: DictConfig) -> None:
    with user_errors(output_key="out"):  # one Error: paragraph, exit 2
        run_battle(cfg)


if __name__ == "__main__":
    sys.argv[1:] = bracket_lists(sys.argv[1:], ("a", "b"))
    main()
