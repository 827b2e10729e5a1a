"""The committed generated code matches what protos/ generates now."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_generated_code_is_fresh(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_protos.py"), str(tmp_path)], check=True)
    generated = sorted((tmp_path / "aal_rpc" / "proto" / "v1").glob("*.py*"))
    assert generated, "protoc produced nothing"
    committed = ROOT / "aal_rpc" / "proto" / "v1"
    stale = [p.name for p in generated if not (committed / p.name).exists()
             or (committed / p.name).read_bytes() != p.read_bytes()]
    assert not stale, f"stale generated code {stale}: run `make protos` and commit"
