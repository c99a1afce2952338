"""`python -m agenttrain.sweeping.worker JOB_JSON`: the local executor's child process, running one SweepJob."""

from __future__ import annotations

import json
import os
import sys

from agenttrain.endpoint.shared_limits import LEDGER_ENV, join
from agenttrain.errors import UserError
from agenttrain.scorers.runner import TEMPLATE_ENV, adopt_template
from agenttrain.sweeping.job import run_job
from agenttrain.sweeping.plan import SweepJob


def main() -> None:
    """Prints the run directory; on a user error, one `error:` line (the sweep shows it) and exit status 1. The
    sweep's ledger (its request limits and budget) is at $AGENTTRAIN_SWEEP_LEDGER, and the sweep's scorer template
    (agenttrain.scorers.runner) at the descriptor in $AGENTTRAIN_SCORER_TEMPLATE, a variable its children do not
    inherit (they do not inherit the descriptor)."""
    job = SweepJob.from_dict(json.loads(sys.argv[1]))
    if (scorers := os.environ.pop(TEMPLATE_ENV, None)) is not None:
        adopt_template(int(scorers))
    try:
        if address := os.environ.get(LEDGER_ENV):
            join(address, job.id)
        print(run_job(job), flush=True)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
