"""tcjepa: Text-Conditional JEPA and I-JEPA in plain PyTorch."""

__version__ = "0.1.0"


def load_encoder(path, map_location="cpu"):
    """The encoder exported by ``tcjepa export`` (see :func:`tcjepa.export.load_encoder`)."""
    from .export import load_encoder as _load

    return _load(path, map_location)


__all__ = ["load_encoder", "__version__"]
