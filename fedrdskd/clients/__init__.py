"""The ClientApp (local training and evaluation) and its training loops."""
