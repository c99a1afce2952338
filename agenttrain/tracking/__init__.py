"""Logging runs to MLflow as they train (`tracking.mlflow` or $AGENTTRAIN_MLFLOW_URI; the `agenttrain[mlflow]` extra).

settings.py decides whether and where, mlflow_run.py is one agenttrain run as one MLflow run, hooks.py is what
training, evaluation and sweeps call. Tracking never changes results, and a tracker that fails only warns: the
first failure turns it off for the rest of the run, so an unreachable server cannot slow training down.
"""

from __future__ import annotations

from agenttrain.tracking.hooks import log_evaluations, sweep_parent, tracked
from agenttrain.tracking.settings import check_tracking

__all__ = ["check_tracking", "log_evaluations", "sweep_parent", "tracked"]
