"""The commands (``tcjepa ...``) and the run-folder I/O they share: the top layer, free to import everything below."""
