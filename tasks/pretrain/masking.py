"""LXMERT's input corruptions: word masking, region masking and mismatched sentences.

Each function draws from the ``torch.Generator`` it is given (the global one while
training, so the trainer's saved RNG state makes a resumed run draw the same masks) and
returns the corrupted inputs together with what must be predicted. Probabilities are the
paper's: 15% of the words (80% ``[MASK]``, 10% a random word, 10% unchanged) and 15% of
the regions (80% zeroed, 10% replaced by a region of another image, 10% unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

#: the label of a position that is not predicted (``ignore_index`` of the losses)
IGNORE = -1


def _split_choice(selected: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Split selected positions 80/10/10: returns (replace-by-mask, replace-by-random)."""
    u = torch.rand(selected.shape, generator=generator)
    return selected & (u < 0.8), selected & (u >= 0.8) & (u < 0.9)


def mask_tokens(input_ids: Tensor, maskable: Tensor, *, mask_id: int, candidate_ids: Tensor,
                prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """BERT/LXMERT word masking.

    Args:
        input_ids: (B, T) token ids.
        maskable: (B, T) bool, True for real word pieces (not [CLS], [SEP] or padding).
        mask_id: id of ``[MASK]``.
        candidate_ids: 1-d tensor of ids a "random word" is drawn from (no special tokens).
        prob: share of the maskable positions that are predicted.

    Returns:
        ``(masked_ids, labels)``: labels hold the original id at predicted positions and
        :data:`IGNORE` elsewhere.
    """
    selected = (torch.rand(input_ids.shape, generator=generator) < prob) & maskable
    to_mask, to_random = _split_choice(selected, generator)
    random_ids = candidate_ids[torch.randint(len(candidate_ids), input_ids.shape, generator=generator)]
    masked = input_ids.clone()
    masked[to_mask] = mask_id
    masked[to_random] = random_ids[to_random]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE))
    return masked, labels


def mask_regions(feats: Tensor, real: Tensor, *, other_region: Callable[[int], Tensor],
                 prob: float = 0.15, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """LXMERT region masking (the feature target stays the unmasked ``feats``).

    Args:
        feats: (B, R, D) region features.
        real: (B, R) bool, True for real (non-padding) regions.
        other_region: ``other_region(b)`` returns a (D,) feature of a region from an image
            other than example ``b``'s.
        prob: share of the real regions that are predicted.

    Returns:
        ``(masked_feats, predict_mask)``: predict_mask is a (B, R) float 1/0 of the regions
        whose properties must be predicted.
    """
    selected = (torch.rand(real.shape, generator=generator) < prob) & real
    to_zero, to_swap = _split_choice(selected, generator)
    masked = feats.clone()
    masked[to_zero] = 0.0
    for b, r in to_swap.nonzero().tolist():
        masked[b, r] = other_region(b)
    return masked, selected.float()


def draw_other(n: int, avoid: Callable[[int], bool], generator: torch.Generator | None,
               tries: int = 16) -> int:
    """A random index in ``range(n)`` for which ``avoid(index)`` is false.

    Gives up after ``tries`` draws and returns the last one (a corpus of a single image
    has no other image to draw from).
    """
    j = 0
    for _ in range(tries):
        j = int(torch.randint(n, (1,), generator=generator))
        if not avoid(j):
            break
    return j


def mismatch(img_ids: Sequence[str], pool_img_ids: Sequence[str], *, prob: float = 0.5,
             generator: torch.Generator | None = None) -> list[int | None]:
    """Cross-modality matching: for each example, ``None`` (keep its sentence) or the index
    in the pool of a sentence about another image (with probability ``prob``)."""
    out: list[int | None] = []
    flips = torch.rand(len(img_ids), generator=generator) < prob
    for img_id, flip in zip(img_ids, flips.tolist(), strict=True):
        if not flip:
            out.append(None)
            continue
        j = draw_other(len(pool_img_ids), lambda k, i=img_id: pool_img_ids[k] == i, generator)
        out.append(None if pool_img_ids[j] == img_id else j)  # no other image to draw from
    return out


def sample_answer(label: dict[int, float], generator: torch.Generator | None = None) -> int:
    """One answer index from a soft label, in proportion to the scores (LXMERT's choice
    for questions with several answers)."""
    keys = list(label)
    if len(keys) == 1:
        return keys[0]
    weights = torch.tensor([max(float(label[k]), 0.0) for k in keys])
    if float(weights.sum()) <= 0:
        return keys[0]
    return keys[int(torch.multinomial(weights, 1, generator=generator))]
