"""Hydra configs of the ``fedrdskd`` command (``config.yaml`` and its groups)."""
