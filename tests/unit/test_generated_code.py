"""generated/ must be exactly what `make gen` produces from protos/."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _differences(left: Path, right: Path) -> list[str]:
    cmp = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"only in {left.name}: {n}" for n in cmp.left_only]
    found += [f"only in generated: {n}" for n in cmp.right_only]
    found += [f"differs: {n}" for n in cmp.diff_files]
    for sub in cmp.common_dirs:
        found += _differences(left / sub, right / sub)
    return found


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    venv_bin = Path(sys.executable).parent
    subprocess.run(
        [str(ROOT / "scripts" / "gen_protos.sh"), str(venv_bin), str(tmp_path)],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    stale = _differences(tmp_path / "liveresource", ROOT / "generated" / "liveresource")
    assert not stale, f"generated/ is stale, run `make gen`: {stale}"


def test_generated_modules_import_without_path_tricks() -> None:
    code = (
        "from generated.liveresource.v1 import resource_allocation_service_pb2_grpc as g; "
        "print(g.ResourceAllocationServiceStub.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "ResourceAllocationServiceStub"
