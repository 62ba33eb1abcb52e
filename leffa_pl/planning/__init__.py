"""Memory planning: what a training stage needs per device, before a GPU is rented."""
