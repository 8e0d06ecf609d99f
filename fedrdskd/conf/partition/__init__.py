"""Hydra config group ``partition``."""
