"""The committed leaderboards are what the documented command writes from the committed runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BOARDS = ROOT / "leaderboards"
TABLES = ["gqa.md", "gqa.csv", "vqa.md", "vqa.csv", "nlvr2.md", "nlvr2.csv", "xlayers_gqa.md",
          "xlayers_gqa.csv", "ablation_gqa.md", "ablation_gqa.csv",
          *(f"inputs_{task}.{ext}" for task in ("gqa", "vqa", "nlvr2") for ext in ("md", "csv"))]


@pytest.mark.slow
def test_make_tables_rewrites_the_committed_tables_exactly(tmp_path: Path) -> None:
    copy = tmp_path / "repo" / "leaderboards"
    shutil.copytree(BOARDS, copy)
    for name in TABLES:  # the command must write them, not find them
        (copy / name).unlink()
    (copy / "index.html").unlink()
    bindir = Path(sys.executable).parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(copy / "make.sh"), "--tables"], env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in TABLES:
        assert (copy / name).read_text() == (BOARDS / name).read_text(), f"{name} differs from the committed one"
    page = (copy / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "SYNTHETIC" in page.upper()
    for task in ("gqa", "vqa", "nlvr2"):
        assert task in page
    # every committed table states the command that regenerates it
    assert "leaderboards/make.sh" in (BOARDS / "README.md").read_text()
