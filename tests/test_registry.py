"""The plugin registry: duplicates, unknown names, entry-point plugins, `vlbench list`."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlbench.registry import MODELS, TASKS, Registry, RegistryError


def test_builtins_are_registered():
    assert "lxmert" in MODELS
    assert "gqa" in TASKS
    assert MODELS.entry("lxmert").description


def test_duplicate_name_is_an_error():
    reg = Registry("widget")
    reg._loaded = True  # no builtins/entry points for this private registry
    reg.register("a", object())
    with pytest.raises(RegistryError, match="registered twice"):
        reg.register("a", object())


def test_unknown_name_suggests_close_matches():
    with pytest.raises(RegistryError) as exc:
        MODELS.get("lxmret")
    msg = str(exc.value)
    assert "unknown model 'lxmret'" in msg and "'lxmert'" in msg and "\n" not in msg


def test_unknown_name_without_close_match_lists_known():
    with pytest.raises(RegistryError, match="known: .*gqa"):
        TASKS.get("zzzzzz")


def test_decorator_returns_object_and_keeps_docstring_line():
    reg = Registry("widget")
    reg._loaded = True

    @reg.register("w")
    class W:
        """A widget.

        More text."""

    assert reg.get("w") is W
    assert reg.entry("w").description == "A widget."


PLUGIN_SETUP = """
from setuptools import setup
setup(
    name="vlbench-toy-plugin", version="0.1", py_modules=["toy_plugin"],
    entry_points={"vlbench.models": ["toy = toy_plugin"],
                  "vlbench.tasks": ["toytask = toy_plugin:ToyTask"]},
)
"""

PLUGIN_MODULE = '''
from dataclasses import asdict, dataclass

import torch
from torch import nn

from vlbench.engine.backbone import BackboneOutput, ModelSpec, register_family


@dataclass
class ToyConfig:
    preset: str = "tiny"
    hidden_size: int = 8
    vocab_size: int = 100

    @classmethod
    def from_preset(cls, name, **overrides):
        return cls(preset=name, **overrides)

    @classmethod
    def from_dict(cls, values):
        return cls(**values)

    def to_dict(self):
        return asdict(self)

    def validate(self):
        pass


class Toy(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.words = nn.Embedding(config.vocab_size, config.hidden_size)

    def forward(self, input_ids, **regions):
        language = self.words(input_ids)
        return BackboneOutput(language, language[:, :1], language[:, 0])


register_family(
    ModelSpec(family="toy", description="toy", config_class=ToyConfig, backbone_class=Toy,
              fit_to_data=lambda config, facts, explicit: None, architecture_keys=("hidden_size",),
              default_preset="tiny"),
    {"toy": (None, "A third-party toy encoder.")},
)

class ToyTask:
    """A third-party task registered by its entry point's object."""
'''


@pytest.mark.slow
def test_entry_point_plugin_installed_with_pip(tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "setup.py").write_text(textwrap.dedent(PLUGIN_SETUP))
    (src / "toy_plugin.py").write_text(textwrap.dedent(PLUGIN_MODULE))
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(target), str(src)],
        check=True, capture_output=True,
    )
    env = dict(os.environ, PYTHONPATH=str(target), COLUMNS="200")
    code = ("from vlbench.registry import MODELS, TASKS; "
            "print(MODELS.entry('toy').description); print(TASKS.get('toytask').__name__)")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["A third-party toy encoder.", "ToyTask"]
    listing = subprocess.run([sys.executable, "-m", "vlbench", "list", "models"], env=env,
                             capture_output=True, text=True, check=True).stdout
    assert "toy" in listing and "lxmert" in listing and "third-party toy encoder" in listing
