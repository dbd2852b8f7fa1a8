"""Score anything with the training metrics: ``python src/evaluate.py source=<...>``.
The keys are documented in ``conf/evaluate.yaml`` and docs/evaluation.md."""

import sys

import hydra
from omegaconf import DictConfig

from capsgan import cli
from capsgan.errors import user_errors
from capsgan.evaluation import run_evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    cli.quiet_library_noise()  # a missing classifier is trained by Lightning here
    with user_errors(output_key="out"):  # one Error: paragraph, exit 2
        run_evaluate(cfg)


if __name__ == "__main__":
    sys.argv[1:] = cli.bracket_lists(sys.argv[1:], ("source",))
    main()
