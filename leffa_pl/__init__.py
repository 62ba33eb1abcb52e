"""leffa_pl: a PyTorch Lightning training framework for Leffa (flow fields in attention)."""

__version__ = "0.1.0"
