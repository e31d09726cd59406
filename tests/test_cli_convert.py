"""`vlbench convert` and `vlbench.load_model` on HF directories, through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import vlbench
from vlbench.cli import app

transformers = pytest.importorskip("transformers")


def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.tensor([[1, 5, 6, 2, 0]])
    return dict(input_ids=ids, attention_mask=(ids > 0).long(), token_type_ids=torch.zeros_like(ids),
                visual_feats=torch.randn(1, 3, 16, generator=g), visual_pos=torch.rand(1, 3, 4, generator=g))


def test_hf_qa_directory_converts_both_ways_and_loads(tmp_path: Path):
    cfg = transformers.LxmertConfig(hidden_size=64, num_attention_heads=4, intermediate_size=128, l_layers=2,
                                    x_layers=1, r_layers=1, vocab_size=100, visual_feat_dim=16, num_qa_labels=7)
    torch.manual_seed(0)
    hf = transformers.LxmertForQuestionAnswering(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    kw = inputs()
    with torch.no_grad():
        want = hf(**kw)
        pooled = hf.lxmert(**kw).pooled_output
        got = vlbench.load_model(str(tmp_path / "hf"))(**kw)
    assert torch.allclose(got.pooled, pooled, atol=1e-5)

    runner = CliRunner()
    res = runner.invoke(app, ["convert", str(tmp_path / "hf"), str(tmp_path / "native")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["convert", str(tmp_path / "native"), str(tmp_path / "hf2"), "--to", "hf"])
    assert res.exit_code == 0, res.output
    again = transformers.LxmertForQuestionAnswering.from_pretrained(tmp_path / "hf2").eval()
    with torch.no_grad():
        back = again(**kw)
    assert torch.allclose(back.question_answering_score, want.question_answering_score, atol=1e-6)


def test_unknown_layout_is_a_clear_error(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    res = CliRunner().invoke(app, ["convert", str(tmp_path / "notes.txt"), str(tmp_path / "out")])
    assert res.exit_code != 0
    assert "understood" in str(res.exception) or "format" in str(res.exception)


def test_convert_refuses_to_overwrite_unless_forced(tmp_path: Path):
    from vlbench.models.lxmert.config import LxmertConfig
    from vlbench.models.lxmert.convert import save_native
    from vlbench.models.lxmert.modeling import LxmertModel

    config = LxmertConfig.from_preset("tiny", vocab_size=50, visual_feat_dim=8)
    src = save_native(tmp_path / "src", LxmertModel(config))
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "config.json").write_text("{}")
    res = CliRunner().invoke(app, ["convert", str(src), str(dst)])
    assert res.exit_code != 0 and "pass --force" in str(res.exception)
    assert (dst / "config.json").read_text() == "{}"  # nothing was written
    res = CliRunner().invoke(app, ["convert", str(src), str(dst), "--force"])
    assert res.exit_code == 0, res.output
    assert json.loads((dst / "config.json").read_text())["family"] == "lxmert"
