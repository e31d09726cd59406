"""WordPiece tokenisation like LXMERT's BERT-base-uncased: lower-case, [CLS] ... [SEP], 20 tokens.

Either a given BERT ``vocab.txt`` or a vocabulary trained on the task's training text
(saved with the run as ``tokenizer.json`` so evaluation reads text the same way).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece

from vlbench.errors import DataError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


class WordPieceTokenizer:
    """A thin wrapper over a ``tokenizers.Tokenizer`` set up like BERT-base-uncased."""

    def __init__(self, tokenizer: Tokenizer, max_seq_len: int = 20):
        self.tokenizer = tokenizer
        self.max_seq_len = max_seq_len
        for tok in SPECIAL_TOKENS:
            if tokenizer.token_to_id(tok) is None:
                raise DataError(f"tokenizer vocabulary lacks the special token {tok}; use a BERT vocab.txt")
        self.pad_id = tokenizer.token_to_id("[PAD]")
        self.mask_id = tokenizer.token_to_id("[MASK]")
        self.cls_id = tokenizer.token_to_id("[CLS]")
        self.sep_id = tokenizer.token_to_id("[SEP]")
        self.unk_id = tokenizer.token_to_id("[UNK]")
        tokenizer.enable_truncation(max_length=max_seq_len)
        tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def special_ids(self) -> set[int]:
        return {self.pad_id, self.mask_id, self.cls_id, self.sep_id, self.unk_id}

    @classmethod
    def from_vocab(cls, vocab_path: str | Path, max_seq_len: int = 20) -> WordPieceTokenizer:
        path = Path(vocab_path)
        if not path.is_file():
            raise DataError(f"vocabulary file {path} not found; pass a BERT vocab.txt or data.vocab=train")
        return cls(_bert_like(WordPiece.from_file(str(path), unk_token="[UNK]")), max_seq_len)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, max_seq_len: int = 20) -> WordPieceTokenizer:
        """A WordPiece vocabulary (BERT pre-processing) learned from ``texts`` (:func:`learn_vocab`)."""
        vocab = learn_vocab(texts, vocab_size)
        tok = _bert_like(WordPiece({p: i for i, p in enumerate(vocab)}, unk_token="[UNK]"))
        return cls(tok, max_seq_len)

    @classmethod
    def load(cls, path: str | Path, max_seq_len: int = 20) -> WordPieceTokenizer:
        try:
            return cls(Tokenizer.from_file(str(path)), max_seq_len)
        except Exception as exc:  # tokenizers raises plain Exceptions on bad JSON
            raise DataError(f"cannot read tokenizer {path}: {exc}; re-create it from the run's data") from exc

    def save(self, path: str | Path) -> None:
        self.tokenizer.save(str(path))

    def tokenize(self, text: str) -> list[str]:
        self.tokenizer.no_padding()
        try:
            return self.tokenizer.encode(text).tokens
        finally:
            self.tokenizer.enable_padding(pad_id=self.pad_id, pad_token="[PAD]")

    def encode_batch(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids, attention mask and token-type ids, padded to the longest (<= max_seq_len)."""
        encs = self.tokenizer.encode_batch(texts)
        return {
            "input_ids": torch.tensor([e.ids for e in encs], dtype=torch.long),
            "attention_mask": torch.tensor([e.attention_mask for e in encs], dtype=torch.long),
            "token_type_ids": torch.tensor([e.type_ids for e in encs], dtype=torch.long),
        }


def learn_vocab(texts: Iterable[str], vocab_size: int) -> list[str]:
    """Special tokens, every character seen (alone and as ``##`` continuation), then the most
    frequent words (ties alphabetical) up to ``vocab_size``.

    Counted here rather than with ``tokenizers``' WordPiece trainer: that trainer breaks ties
    between equally frequent merges in hash-map order, which changes from process to process,
    so the same corpus and seed would give different vocabularies and different runs.
    """
    probe = _bert_like(WordPiece(unk_token="[UNK]"))
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(w for w, _ in probe.pre_tokenizer.pre_tokenize_str(probe.normalizer.normalize_str(text)))
    chars = sorted({c for w in counts for c in w})
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in chars)]
    known = set(vocab)
    for word, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(vocab) >= vocab_size:
            break
        if word not in known:
            vocab.append(word)
            known.add(word)
    return vocab


def _bert_like(model: WordPiece) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=None, clean_text=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    _add_template(tok)  # a no-op for a model without vocabulary (learn_vocab's probe)
    return tok


def _add_template(tok: Tokenizer) -> None:
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    if cls_id is None or sep_id is None:
        return
    # As BERT's tokenizer: a literal "[MASK]" or "[SEP]" in the text is that token, not pieces.
    tok.add_special_tokens(SPECIAL_TOKENS)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def build_tokenizer(vocab: str, texts: Iterable[str], vocab_size: int, max_seq_len: int) -> WordPieceTokenizer:
    """``vocab="train"`` learns one from ``texts``; otherwise ``vocab`` is a BERT vocab.txt."""
    if vocab == "train":
        return WordPieceTokenizer.train(texts, vocab_size, max_seq_len)
    return WordPieceTokenizer.from_vocab(vocab, max_seq_len)
