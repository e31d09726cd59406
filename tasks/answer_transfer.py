"""Start a QA head from a checkpoint's: rows of the answers both answer tables share.

As ``load_lxmert_qa`` in the released LXMERT code: after LXMERT's answer normalisation, each
answer of this task that the checkpoint's table also has gets that row of the checkpoint's
classifier (the rest start at zero), and the hidden layers of the head are copied. The copied
biases of a softmax-trained pre-training head are then shifted so that fine-tuning's sigmoid
loss starts calibrated (:func:`recenter_answer_logits`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from vlbench.errors import CheckpointError

from .pretrain.objectives import normalize_answer

#: where a checkpoint keeps an LXMERT-style answer classifier: head name -> key prefix
QA_HEADS = {"qa": "", "pretraining": "answer_head."}
HIDDEN_KEYS = ("logit_fc.0.weight", "logit_fc.0.bias", "logit_fc.2.weight", "logit_fc.2.bias")


def transfer_answers(task: Any, model: nn.Module, source: Any,
                     say: Callable[[str], None]) -> dict[str, Any]:
    """Copy answer rows from ``source`` (a ``StoredCheckpoint``) into ``model.heads["qa"]``.

    Returns ``answers_transferred``, ``answers_total`` (this task's answers) and
    ``answer_bias_shift`` (see :func:`recenter_answer_logits`), for the run record.
    """
    total = len(task.answers)
    none = {"answers_transferred": 0, "answers_total": total, "answer_bias_shift": 0.0}
    target = model.heads["qa"]
    if not hasattr(target, "logit_fc"):
        say(f"The {type(target).__name__} answer head has no LXMERT classifier rows to take over: "
            "it starts fresh")
        return none
    _, heads, _ = source.split()
    found = next(((name, prefix) for name, prefix in QA_HEADS.items()
                  if f"{prefix}logit_fc.3.weight" in heads.get(name, {})), None)
    if found is None or not source.answers:
        say("The checkpoint has no QA head with an answer table: the answer head starts fresh")
        return none
    name, prefix = found
    head = {k[len(prefix):]: v for k, v in heads[name].items() if k.startswith(prefix)}
    if head["logit_fc.3.weight"].shape[0] != len(source.answers):
        raise CheckpointError(f"{source.path}: the answer table lists {len(source.answers)} answers "
                              f"but the QA head has {head['logit_fc.3.weight'].shape[0]} rows")
    index: dict[str, int] = {}
    for i, a in enumerate(source.answers):
        index.setdefault(normalize_answer(a), i)
    shared = [(j, index[normalize_answer(a)]) for j, a in enumerate(task.answers)
              if normalize_answer(a) in index]
    if not shared:
        say(f"Transferred 0 of {total} answers: no answer is shared with the checkpoint's answer table")
        return none
    own = target.state_dict()
    for k in HIDDEN_KEYS:
        if own[k].shape != head[k].shape:
            raise CheckpointError(f"{source.path}: answer head '{k}' is {tuple(head[k].shape)}, "
                                  f"this model's {tuple(own[k].shape)}")
        own[k] = head[k].clone()
    weight = torch.zeros_like(own["logit_fc.3.weight"])
    bias = torch.zeros_like(own["logit_fc.3.bias"])
    dst = torch.tensor([j for j, _ in shared])
    src = torch.tensor([i for _, i in shared])
    weight[dst] = head["logit_fc.3.weight"][src]
    bias[dst] = head["logit_fc.3.bias"][src]
    own["logit_fc.3.weight"], own["logit_fc.3.bias"] = weight, bias
    target.load_state_dict(own)
    # The pre-training QA head is a softmax (CE); a fine-tuned QA head is already sigmoid (BCE).
    recenter = source.task == "pretrain"
    shift = recenter_answer_logits(task, model, dst) if recenter else 0.0
    say(f"Transferred {len(shared)} of {total} answers from the checkpoint's QA head"
        + (f" (biases shifted by {-shift:.2f} for the sigmoid loss)" if recenter else ""))
    return {"answers_transferred": len(shared), "answers_total": total, "answer_bias_shift": -shift}


def recenter_answer_logits(task: Any, model: nn.Module, rows: torch.Tensor,
                           n_examples: int = 256) -> float:
    """Shift the transferred answer biases by the mean log-partition of their logits.

    Pre-training trains the QA head with a softmax over the answer table; fine-tuning uses
    LXMERT's sigmoid BCE over answers. Raw softmax logits read as sigmoid scores say "yes" to
    many answers at once, and the first fine-tuning steps are spent pulling them all down,
    which on a small fine-tuning set erases what pre-training learned. Subtracting
    ``E_x[logsumexp_j z_j(x)]`` turns the logits into (approximately) log-probabilities, so the
    sigmoid scores start near the softmax probabilities. Returns the shift applied.
    """
    examples = task.examples(task.train_split)[:n_examples]
    if not examples or len(rows) == 0:
        return 0.0
    was_training = model.training
    model.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(examples), 64):
            logits = model(task.collate(examples[i:i + 64])).float()
            parts.append(torch.logsumexp(logits[:, rows], dim=-1))
    model.train(was_training)
    shift = float(torch.cat(parts).mean())
    with torch.no_grad():
        model.heads["qa"].logit_fc[3].bias[rows] -= shift
    return shift
