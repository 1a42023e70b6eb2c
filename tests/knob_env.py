"""A snippet run in a fresh Python process under given environment variables
(shared by the CUDA plan tests): the plans read their knobs once a process."""

import os
import subprocess
import sys


def output_under(knobs, code):
    """stdout, stripped, of `python -c code` with the variables in `knobs` set
    (a value of None: unset)."""
    env = dict(os.environ)
    for name, value in knobs.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()
