"""The main job learns: the default synthetic GQA run ends far above answering from the question alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlbench.engine.run import train


@pytest.mark.slow
def test_default_gqa_job_beats_the_answer_prior_by_20_points(tmp_path: Path):
    # Exactly `vlbench train --model lxmert --task gqa` on the embedded benchmark (CPU-sized defaults).
    run = train("lxmert", "gqa", out=tmp_path)
    record = json.loads((run / "run.json").read_text())
    assert record["data"]["source"] == "synthetic" and record["status"] == "finished"
    accuracy = record["metrics"]["testdev"]["accuracy"]
    prior = record["baselines"]["prior"]["testdev"]["accuracy"]
    assert accuracy >= prior + 20, f"testdev {accuracy:.1f} vs prior {prior:.1f}"
