"""The package's real Hydra config, composed as the CLI composes it (for the tests)."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

import fedrdskd.conf

CONF_DIR = Path(fedrdskd.conf.__file__).parent
PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
README = PYPROJECT.with_name("README.md")


def yaml_names(group: str) -> list[str]:
    """The config group's options (``strategy`` -> fedavg, fedrdskd, ...), from the files."""
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def hydra_dict(*overrides: str) -> dict:
    """The resolved Hydra config as the CLI passes it to ``experiment_from_dict``."""
    with initialize_config_module("fedrdskd.conf", version_base=None):
        config = compose("config", overrides=list(overrides))
    return OmegaConf.to_container(config, resolve=True)
