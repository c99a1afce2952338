"""Where `eval` and `--resume` send your API key and your tasks: a run folder's config.yaml names its endpoints, and a
folder someone else made (copied, downloaded, shared) must not make agenttrain send them to a server of its choice.

The rule. Endpoints are checked only when they come from the run folder: a role's `base_url` that `--set` changed
(to another URL), or that the config leaves to $AGENTTRAIN_BASE_URL / $OPENAI_BASE_URL / OpenAI, is your own
choice. A run you made (or adopted) on this machine is trusted whole: its config.yaml carries your signature
(rundir.ownership), so resuming your own run against your own vLLM server asks nothing. Otherwise an endpoint on this
machine (loopback) or at a well-known provider over HTTPS is used, with one line saying which; any other endpoint,
a remote Ray cluster (`executor.address`, which receives the key for its workers) and a remote MLflow server
(`tracking.mlflow.tracking_uri`, which receives your MLflow credentials and the run's results) need --trust-endpoint
or --set (llm.base_url=URL, tracking.mlflow.tracking_uri=URL); so do variables of your environment that the folder
hands to model-written code (`sandbox.env_allow`). A resume with either adopts the run: its
config.yaml is then signed as yours.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from typing import Literal
from urllib.parse import urlsplit

from agenttrain.config import Experiment, load_experiment
from agenttrain.errors import UserError
from agenttrain.rundir.directory import RunDir

logger = logging.getLogger(__name__)

# Hosts their providers run themselves. Not tenant namespaces such as *.openai.azure.com, where anyone can name a
# resource of their own: those need --trust-endpoint once (a resume then signs the run as yours).
WELL_KNOWN_HOSTS = frozenset({
    "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", "api.mistral.ai", "api.groq.com",
    "api.together.xyz", "api.fireworks.ai", "openrouter.ai", "api.deepseek.com", "api.x.ai", "api.deepinfra.com",
})
ROLES: tuple[Literal["agent", "optimizer"], ...] = ("agent", "optimizer")


def is_local(host: str | None) -> bool:
    """This machine: localhost, or a loopback (or unspecified) address."""
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def is_trusted_url(url: str) -> bool:
    if url == "local":  # the embedded model, started by agenttrain itself
        return True
    parts = urlsplit(url)
    return is_local(parts.hostname) or (parts.scheme == "https" and parts.hostname in WELL_KNOWN_HOSTS)


def _destinations(experiment: Experiment) -> list[tuple[str, str | None]]:
    """(what, where) for each place `experiment` sends requests to; where is None for a place it does not use."""
    found: list[tuple[str, str | None]] = []
    for role in ROLES:
        settings = experiment.llm_for(role)
        found.append((f"the {role}'s requests (and ${settings.api_key_env})", settings.base_url))
    executor = experiment.executor
    found.append(("the Ray workers (and your API key for them)", executor.address if executor.kind == "ray" else None))
    mlflow = experiment.tracking.mlflow
    found.append(("the run's MLflow logging (and your MLflow credentials)", mlflow.tracking_uri if mlflow else None))
    return found


def folder_endpoints(saved: Experiment, experiment: Experiment) -> list[tuple[str, str]]:
    """(what, where) for each place `experiment` sends requests to that it took from the run's config.yaml as it is
    on disk (`saved`): role endpoints, a remote Ray cluster and an MLflow tracking server."""
    return [(what, where) for (what, where), (_, was) in zip(_destinations(experiment), _destinations(saved),
                                                                strict=True)
            if where and where == was]


def named_alike(run: RunDir, experiment: Experiment) -> bool:
    """Whether the run's config.yaml sends requests where `experiment`, from a config file the user gave (a sweep's),
    sends them: then its endpoints are that user's choice, whoever signed the folder (a sweep on Ray resumes on any
    node, each with its own key)."""
    saved = _destinations(load_experiment(run.path / "config.yaml"))
    return [where for _, where in saved] == [where for _, where in _destinations(experiment)]


def handed_variables(saved: Experiment, experiment: Experiment) -> list[str]:
    """The variables set in this environment that the run's config.yaml, as it is on disk (`saved`), passes to
    model-written code (`sandbox.env_allow`): with `sandbox.network` on, a function could send your key anywhere."""
    kept = set(saved.sandbox.env_allow)
    return [name for name in experiment.sandbox.env_allow if name in kept and name in os.environ]


def check_trust(run: RunDir, experiment: Experiment, trusted: bool) -> None:
    """Before `eval` or `--resume` sends anything: raise UserError for an endpoint from someone else's run folder that
    is neither on this machine nor a well-known provider, unless `trusted` (--trust-endpoint); say which endpoint a
    foreign folder's requests go to."""
    if trusted or run.made_here():
        return
    saved = load_experiment(run.path / "config.yaml")  # read once for both checks
    endpoints = folder_endpoints(saved, experiment)
    sends = [f"{what} to {url}" for what, url in endpoints if not _is_trusted(url)]
    if handed := handed_variables(saved, experiment):
        sends.append(f"your {', '.join(f'${name}' for name in handed)} to its functions' code (sandbox.env_allow)")
    if sends:
        raise UserError(f"{run.path} was not made by you on this machine, and its config.yaml sends {'; '.join(sends)}."
                        " Pass --trust-endpoint if you trust it, or --set llm.base_url=URL for your own endpoint")
    for what, url in endpoints:
        logger.warning("%s was not made by you on this machine; sending %s to %s", run.path.name, what, url)


def _is_trusted(where: str) -> bool:
    if where == "auto":  # the Ray cluster this machine is a node of
        return True
    if where.startswith("ray://"):
        return is_local(urlsplit(where).hostname)
    if urlsplit(where).scheme in ("", "file", "sqlite"):  # an MLflow store in a file on this machine
        return True
    return is_trusted_url(where)
