"""The public surface: `agenttrain.__all__` names one function per command, imported on first use."""

from __future__ import annotations

import subprocess
import sys

import agenttrain
from agenttrain import api


def test_every_public_name_is_an_api_function():
    assert sorted(agenttrain.__all__) == sorted(agenttrain._API)
    for name in agenttrain.__all__:
        assert callable(getattr(agenttrain, name)), name
    assert agenttrain.evaluate is api.eval_run and agenttrain.validate is api.prepare


def test_no_module_shadows_a_public_function():
    """Importing a submodule sets it as an attribute of the package: none may be named like a public function."""
    import agenttrain.sweeping  # the sweep command's package

    assert agenttrain.sweep is api.sweep and agenttrain.evaluate_epochs is api.eval_epochs


def test_importing_agenttrain_loads_no_heavy_library():
    code = ("import sys, agenttrain; "
            "print(sorted(m for m in ('agenttrain.api', 'openai', 'sympy', 'numpy') if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
