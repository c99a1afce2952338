"""The sandbox's fork server: one template process per Sandbox that has imported sympy, numpy and the worker
once, and forks a session's supervisor (supervisor.fork_session) on request (see agenttrain/forking.py).

A fork costs a few milliseconds where a fresh interpreter costs ~0.3 s of CPU. Each request carries the new
session's settings and the worker end of the session's private channel. The template never runs user code;
the new session's supervisor says "ready" on its own channel.
"""

from __future__ import annotations

import gc
from collections.abc import Mapping, Sequence

from agenttrain.forking import ForkServer, serve_requests, template_settings
from agenttrain.sandbox import isolation as confine

CONTROL_TIMEOUT_S = 30  # the template imports sympy and numpy before it says ready


def launch_template(python: str, env: Mapping[str, str], preload: Sequence[str]) -> ForkServer:
    """A template that imports `preload`, started without waiting: `wait_ready(CONTROL_TIMEOUT_S)` before use."""
    statement = "from agenttrain.sandbox.forkserver import serve; serve()"
    return ForkServer.launch(python, env, statement, {"preload": list(preload)})


def serve() -> None:
    """The template's program: import, then fork a session per request until the trainer goes."""
    from agenttrain.sandbox import supervisor  # imported here so that forks need not import it

    control, settings = template_settings()
    confine.die_with_parent()
    confine.own_namespaces()  # not root: from here on, in a user namespace of our own
    for module in settings["preload"]:
        __import__(module)
    confine.visible_host_paths()  # computed once here, not in every session
    gc.freeze()  # the imported objects are never collected: forks share their pages instead of copying them
    serve_requests(control, supervisor.fork_session)
