"""Hydra config group ``dataset``."""
