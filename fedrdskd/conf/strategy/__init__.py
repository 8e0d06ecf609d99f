"""Hydra config group ``strategy`` (the strategy presets)."""
