"""A rank that fails ends the whole torchrun job promptly, with the failure named, instead of hanging the others."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import torchrun_env

# Runs the real command line with one change: rank 1's step 2 raises, as a bug or a bad sample would.
LAUNCHER = """
import os, sys
import tcjepa.train.loop as loop

real_step = loop.train_step

def failing_step(*args, **kwargs):
    if os.environ["RANK"] == "1" and args[4] == 2:
        raise RuntimeError("injected failure on rank 1 at step 2")
    return real_step(*args, **kwargs)

loop.train_step = failing_step
from tcjepa.app.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_a_rank_that_raises_ends_the_job_naming_the_failure(tmp_path: Path) -> None:
    launcher = tmp_path / "launch.py"
    launcher.write_text(LAUNCHER)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(launcher),
        "pretrain", "tiny", f"run.dir={run_dir}", "train.steps=6", "train.batch_size=4", "train.log_every=1",
        "train.monitor_every=0", "train.threads=1", "--no-progress",
    ]  # fmt: skip
    start = time.monotonic()
    done = subprocess.run(cmd, env=torchrun_env(), capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - start
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    # torchrun's summary names the root cause: the rank and the message, from the error file tcjepa records.
    summary = out[out.index("Root Cause") :] if "Root Cause" in out else ""
    assert "injected failure on rank 1 at step 2" in summary, out
    assert "rank      : 1" in summary or "rank: 1" in summary, out
    # Rank 0 did not wait for the 5-minute collective timeout, let alone forever.
    assert elapsed < 120, f"the job took {elapsed:.0f} s to end"
    assert not (run_dir / "checkpoints" / "latest.pt").exists()  # no checkpoint past the failure
