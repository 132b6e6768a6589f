"""tcjepa: Text-Conditional JEPA and I-JEPA in plain PyTorch."""

__version__ = "0.1.0"
