"""Whether a run is tracked and where: the config's `tracking.mlflow`, else $AGENTTRAIN_MLFLOW_URI."""

from __future__ import annotations

import os

from agenttrain.config import Experiment, MlflowConfig
from agenttrain.errors import import_extra
from agenttrain.names import ENV_MLFLOW_URI


def mlflow_settings(experiment: Experiment) -> MlflowConfig | None:
    configured, from_env = experiment.tracking.mlflow, os.environ.get(ENV_MLFLOW_URI) or None
    if configured is None and from_env is None:
        return None
    settings = configured or MlflowConfig()
    return settings if settings.tracking_uri else settings.model_copy(update={"tracking_uri": from_env})


def check_tracking(experiment: Experiment) -> None:
    """Before a run starts: a tracked config needs MLflow installed (one line naming the extra otherwise)."""
    if mlflow_settings(experiment) is not None:
        import_extra("mlflow", "mlflow", "tracking.mlflow")
