"""WordPiece tokenisation: BERT vocab.txt or trained on task text; lower-case; 20 tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlbench.data.tokenizer import WordPieceTokenizer, build_tokenizer
from vlbench.errors import DataError

TEXTS = ["What color is the small cube?", "Is there a red sphere left of the cylinder?",
         "Are the cube and the sphere the same material?"] * 30


def bert_vocab(tmp_path: Path) -> Path:
    # BERT's layout: [PAD]=0, [unused*], [UNK]=100, [CLS]=101, [SEP]=102, [MASK]=103.
    words = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                               "what", "color", "is", "the", "cube", "##s", "?"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(words) + "\n")
    return path


def test_bert_vocab_ids_lowercase_and_wordpieces(tmp_path):
    tok = WordPieceTokenizer.from_vocab(bert_vocab(tmp_path))
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 100, 101, 102, 103)
    batch = tok.encode_batch(["What COLORS is the cube?", "zebra"])
    # cls what color ##s is the cube ? sep ; unknown words -> [UNK]
    assert batch["input_ids"][0].tolist() == [101, 104, 105, 109, 106, 107, 108, 110, 102]
    assert batch["input_ids"][1].tolist()[:3] == [101, 100, 102]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1] + [0] * 6
    assert batch["token_type_ids"].sum() == 0


def test_truncates_to_max_seq_len_keeping_cls_and_sep(tmp_path):
    tok = WordPieceTokenizer.from_vocab(bert_vocab(tmp_path), max_seq_len=20)
    ids = tok.encode_batch(["what color is the cube " * 10])["input_ids"]
    assert ids.shape == (1, 20)
    assert ids[0, 0] == tok.cls_id and ids[0, -1] == tok.sep_id


def test_trained_vocab_saved_and_reloaded_reads_text_identically(tmp_path):
    tok = build_tokenizer("train", TEXTS, vocab_size=300, max_seq_len=20)
    assert tok.tokenize("What color is the cube?") == ["[CLS]", "what", "color", "is", "the", "cube", "?", "[SEP]"]
    tok.save(tmp_path / "tokenizer.json")
    again = WordPieceTokenizer.load(tmp_path / "tokenizer.json")
    sample = ["Is the sphere red?", "what material is the cylinder"]
    assert again.encode_batch(sample)["input_ids"].tolist() == tok.encode_batch(sample)["input_ids"].tolist()
    assert again.vocab_size == tok.vocab_size


def test_missing_or_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        WordPieceTokenizer.from_vocab(tmp_path / "nope.txt")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="cannot read tokenizer"):
        WordPieceTokenizer.load(tmp_path / "bad.json")
    (tmp_path / "plain.txt").write_text("a\nb\n")
    with pytest.raises(DataError, match="special token"):
        WordPieceTokenizer.from_vocab(tmp_path / "plain.txt")


def test_literal_special_tokens_stay_whole():
    from vlbench.data.tokenizer import WordPieceTokenizer

    tok = WordPieceTokenizer.train(["is the cat on the mat", "a red cube"], vocab_size=200)
    assert tok.tokenize("the [MASK] is on the mat") == ["[CLS]", "the", "[MASK]", "is", "on", "the",
                                                        "mat", "[SEP]"]
    ids = tok.encode_batch(["a [SEP] cube"])["input_ids"][0].tolist()
    assert ids.count(tok.sep_id) == 2
