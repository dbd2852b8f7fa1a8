"""Measure training speed: ``python src/bench.py [quick=true]`` (see conf/bench.yaml).
Prints a table and writes ``bench.json`` into the run folder (``outputs/bench/<date>/<time>/``)."""

import hydra
from omegaconf import DictConfig

from capsgan import cli
from capsgan.benchmark import run_benchmark
from capsgan.errors import user_errors


@hydra.main(version_base="1.3", config_path="../conf", config_name="bench")
def main(cfg: DictConfig) -> None:
    cli.quiet_library_noise()  # Lightning messages a user cannot act on
    with user_errors(output_key="output"):  # one paragraph, exit 2 (HYDRA_FULL_ERROR=1: traceback)
        run_benchmark(cfg)


if __name__ == "__main__":
    main()
