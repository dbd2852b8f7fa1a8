"""Train the reference classifier of the quality metrics: ``python src/train_classifier.py
data=mnist``; settings in ``conf/train_classifier.yaml``."""

import hydra
from omegaconf import DictConfig

from capsgan import cli
from capsgan.classifier import resolve_classifier_dir, train_and_save
from capsgan.config import validate_classifier_config
from capsgan.errors import user_errors

# the keys of conf/train_classifier.yaml that are classifier.fit_classifier's arguments
FIT_KEYS = ("epochs", "lr", "weight_decay", "channels", "hidden", "dropout", "seed", "accelerator")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train_classifier")
def main(cfg: DictConfig) -> float:
    cli.quiet_library_noise()  # Lightning messages a user cannot act on
    with user_errors(output_key="classifier_dir"):  # one paragraph, exit 2
        validate_classifier_config(cfg)
        datamodule = hydra.utils.instantiate(cfg.data)
        datamodule.prepare_data()  # a missing data set fails before any cache folder is made
        directory = resolve_classifier_dir(datamodule.root, cfg.classifier_dir, datamodule.name)
        settings = {key: cfg[key] for key in FIT_KEYS}
        _, info = train_and_save(datamodule, directory, **settings, enable_progress_bar=True)
        return info["test_accuracy"]


if __name__ == "__main__":
    main()
