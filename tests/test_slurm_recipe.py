"""scripts/slurm/pretrain.sbatch: valid bash, the torchrun line it hands to srun, and its local form trains."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from tests.conftest import torchrun_env

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "slurm" / "pretrain.sbatch"


def test_the_script_parses() -> None:
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)


def test_under_slurm_it_runs_one_torchrun_per_node_meeting_on_the_first(tmp_path: Path) -> None:
    # Stand-ins for SLURM's tools: scontrol names two nodes, srun prints what it was asked to run.
    (tmp_path / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-a17\\ngpu-b03\\n'\n")
    (tmp_path / "srun").write_text('#!/bin/sh\necho "srun $*"\n')
    for tool in ("scontrol", "srun"):
        (tmp_path / tool).chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", SLURM_JOB_NODELIST="gpu-[a17,b03]")
    env.update(SLURM_NNODES="2", SLURM_GPUS_ON_NODE="8", SLURM_JOB_ID="4242", SLURM_CPUS_PER_TASK="64")
    out = subprocess.run(
        ["bash", str(SCRIPT), "vitb16-224", "run.name=x", "--resume"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert " ".join(out.stdout.split()) == (
        "srun --kill-on-bad-exit=1 torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d "
        "--rdzv-endpoint gpu-a17:29500 --rdzv-id 4242 -m tcjepa pretrain vitb16-224 run.name=x --resume"
    )


def test_its_local_form_trains_two_steps_in_two_processes(tmp_path: Path) -> None:
    env = torchrun_env() | {"TCJEPA_LOCAL": "1", "NPROC_PER_NODE": "2"}
    run_dir = tmp_path / "run"
    cmd = [
        "bash", str(SCRIPT), "tiny", f"run.dir={run_dir}", "train.steps=2", "train.batch_size=4",
        "train.log_every=1", "train.monitor_every=0", "train.threads=1", "--no-progress",
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
