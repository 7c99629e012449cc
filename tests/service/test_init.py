"""Importing the service sets how torch's OpenMP threads wait, before torch is loaded, unless told otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import os, sys, service; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"


@pytest.mark.parametrize("given, expected", [({}, "1000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                             ({"OMP_WAIT_POLICY": "PASSIVE"}, "None")])
def test_the_spin_count_is_set_before_torch_loads_unless_the_operator_set_one(given, expected):
    env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**env, **given}, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [expected, "False"]  # torch not loaded yet: libgomp will read the value
