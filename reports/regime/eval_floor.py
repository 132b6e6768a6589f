"""Evaluate the random-init floor of a config with any suite (``tcjepa compare`` does this for its own suite).

Usage: ``python reports/regime/eval_floor.py CONFIG SUITE OUT [key=value ...]``; writes OUT/eval.json and eval.md.
"""

import sys

from tcjepa.app.runs import untrained_target
from tcjepa.config import load_config
from tcjepa.eval.suite import SUITES, run_eval

cfg = load_config(sys.argv[1], sys.argv[4:])
run_eval(untrained_target(cfg, cfg.seed), SUITES[sys.argv[2]], out=sys.argv[3], progress=False)
