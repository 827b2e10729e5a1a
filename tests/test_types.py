"""mypy finds no error in aal_rpc/, as `python -m mypy` checks it with pyproject.toml's [tool.mypy]."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_finds_no_errors():
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, f"mypy (exit status {done.returncode}):\n{done.stdout}{done.stderr}"
