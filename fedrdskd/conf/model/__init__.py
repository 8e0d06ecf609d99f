"""Hydra config group ``model``."""
