"""Semi-supervised classification on a GAN's discriminator features:
``python src/semisupervised.py run=<run> n_labels=100,1000 seeds=3``. The keys are in
``conf/semisupervised.yaml``, the protocol in docs/evaluation.md."""

import sys

import hydra
from omegaconf import DictConfig

from capsgan.cli import bracket_lists
from capsgan.errors import user_errors
from capsgan.semisupervised import run_semisupervised


@hydra.main(version_base="1.3", config_path="../conf", config_name="semisupervised")
def main(cfg: DictConfig) -> None:
    with user_errors(output_key="out"):  # one Error: paragraph, exit 2
        run_semisupervised(cfg)


if __name__ == "__main__":
    sys.argv[1:] = bracket_lists(sys.argv[1:], ("run", "n_labels", "seeds", "l2_grid"))
    main()
