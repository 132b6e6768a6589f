"""``python -m tcjepa`` is the ``tcjepa`` command (what ``torchrun -m tcjepa`` runs)."""

from __future__ import annotations

import subprocess
import sys


def test_python_m_tcjepa_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "tcjepa", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "pretrain" in done.stdout and done.stdout.startswith("usage: tcjepa")
