"""Shared fixtures: a small synthetic world in the official formats, generated once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The suite checks CPU results (bit-exact resumes, runs equal to earlier runs); the CUDA paths
# have their own tests (tests/test_cuda.py), which see the GPU with VLBENCH_TEST_CUDA=1. Set
# before torch starts CUDA, and inherited by the vlbench processes tests start.
if os.environ.get("VLBENCH_TEST_CUDA") != "1":
    os.environ["CUDA_VISIBLE_DEVICES"] = ""

#: a world small enough to generate in seconds and train on in a few more
SMALL_WORLD = dict(n_images=240, vqa_train_images=60, vqa_val_images=24, vqa_minival_images=12,
                   nlvr2_train_sets=40, nlvr2_dev_sets=10, nlvr2_test1_sets=10)


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep feature caches and the embedded world out of the user's cache directory."""
    os.environ.setdefault("VLBENCH_CACHE", str(tmp_path_factory.mktemp("vlbench-cache")))


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlbench.data.synth.world import generate

    root = tmp_path_factory.mktemp("world") / "small"
    generate(root, seed=1, **SMALL_WORLD)
    return root
