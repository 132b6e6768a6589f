"""``python -m tcjepa``: the same command line as the ``tcjepa`` script (handy under ``torchrun -m``)."""

from tcjepa.app.cli import main

raise SystemExit(main())
