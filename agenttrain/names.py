"""Names the command line shows before anything heavy loads (`agenttrain --help` imports this, not the config
schema): the environment variables that set defaults, the default run folder, the datasets `pull` fetches."""

from __future__ import annotations

import os
from pathlib import Path

# Environment defaults, for settings that are the same in every config of a user (documented in `--help`).
ENV_BASE_URL = "AGENTTRAIN_BASE_URL"
ENV_MODEL = "AGENTTRAIN_MODEL"
ENV_OPTIMIZER_MODEL = "AGENTTRAIN_OPTIMIZER_MODEL"
ENV_OUTPUT_DIR = "AGENTTRAIN_OUTPUT_DIR"
ENV_MLFLOW_URI = "AGENTTRAIN_MLFLOW_URI"  # tracking.mlflow.tracking_uri; setting it turns MLflow tracking on
ENV_MCP_TOKEN = "AGENTTRAIN_MCP_TOKEN"  # the bearer token `serve --transport http` requires of clients

DATASETS = ("math", "tabmwp", "gaia")
FOLDER_FORMATS = ("mcp", "package")  # `export --format` values that write a folder rather than one file


def default_output_dir() -> Path:
    """Where runs go when the config does not say: $AGENTTRAIN_OUTPUT_DIR, else ./runs."""
    return Path(os.environ.get(ENV_OUTPUT_DIR) or "runs")

# What "strict" means wherever a strict accuracy is shown (eval, score, the report, the viewer).
STRICT_MEANING = ("strict: Hendrycks' is_equiv string match alone, the figure MATH papers report; accuracy also counts "
                  "answers math-verify proves equal, such as 3.0 for 3 (math scorer only)")
