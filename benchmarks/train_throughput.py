"""Training throughput of vlbench's LXMERT vs HF transformers' ``LxmertForQuestionAnswering``.

One training step = forward, cross-entropy on the answer logits, backward, AdamW step, with
identical shapes (default: published 9/5/5 base model, batch 16, 20 tokens, 36 regions x
2048-d features, 3129 answers) and identical inputs. Each (implementation, precision) runs in a
fresh subprocess, so peak memory is its own; ``--rounds`` alternates the implementations to
even out load from other processes and keeps each one's best round.

    python benchmarks/train_throughput.py --steps 5 --warmup 2
    python benchmarks/train_throughput.py --device cuda --steps 50 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from typing import Any

IMPLEMENTATIONS = ("vlbench", "hf")


def build(impl: str, args: argparse.Namespace):
    """The model (backbone + QA head) as one module, and a function mapping a batch to logits."""
    import torch

    torch.manual_seed(0)
    sizes = dict(l_layers=args.l_layers, r_layers=args.r_layers, x_layers=args.x_layers,
                 visual_feat_dim=args.feat_dim, num_qa_labels=args.num_qa_labels)
    if impl == "hf":
        import transformers

        model = transformers.LxmertForQuestionAnswering(transformers.LxmertConfig(**sizes))
        return model, lambda b: model(**b).question_answering_score

    from vlbench.models.heads import QAHead
    from vlbench.models.lxmert.config import LxmertConfig
    from vlbench.models.lxmert.modeling import LxmertModel

    config = LxmertConfig.from_preset("base", **sizes)
    model = torch.nn.ModuleDict({
        "lxmert": LxmertModel(config),
        "answer_head": QAHead(config.hidden_size, args.num_qa_labels),
    })
    return model, lambda b: model["answer_head"](model["lxmert"](**b).pooled)


def make_batch(args: argparse.Namespace, device: str) -> tuple[dict[str, Any], Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    b, t, r = args.batch_size, args.tokens, args.regions
    lengths = torch.randint(max(2, t // 2), t + 1, (b,), generator=g)  # padded questions
    batch = dict(
        input_ids=torch.randint(1000, 30522, (b, t), generator=g),
        attention_mask=(torch.arange(t)[None, :] < lengths[:, None]).long(),
        token_type_ids=torch.zeros(b, t, dtype=torch.long),
        visual_feats=torch.randn(b, r, args.feat_dim, generator=g),
        visual_pos=torch.rand(b, r, 4, generator=g),
    )
    labels = torch.randint(0, args.num_qa_labels, (b,), generator=g)
    return {k: v.to(device) for k, v in batch.items()}, labels.to(device)


def measure(impl: str, precision: str, args: argparse.Namespace) -> dict[str, float]:
    """Examples/s and peak memory of ``args.steps`` timed training steps (run in a child)."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    model, logits_of = build(impl, args)
    model.to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch, labels = make_batch(args, device)
    autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                              enabled=precision == "bf16")

    def step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(logits_of(batch).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync()
    seconds = time.perf_counter() - start
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # peak resident set of this child process (KiB on Linux)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"examples_per_s": args.steps * args.batch_size / seconds, "peak_mb": peak_mb}


def _child(impl: str, precision: str, args: argparse.Namespace, queue: Any) -> None:
    try:
        queue.put(measure(impl, precision, args))
    except Exception as exc:  # report, don't hang the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def run_isolated(impl: str, precision: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(impl, precision, args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    if "error" in result:
        raise SystemExit(f"{impl} {precision}: {result['error']}")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
    p.add_argument("--rounds", type=int, default=1, help="alternating repetitions; best kept")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--tokens", type=int, default=20)
    p.add_argument("--regions", type=int, default=36)
    p.add_argument("--feat-dim", type=int, default=2048)
    p.add_argument("--num-qa-labels", type=int, default=3129)
    p.add_argument("--l-layers", type=int, default=9)
    p.add_argument("--r-layers", type=int, default=5)
    p.add_argument("--x-layers", type=int, default=5)
    p.add_argument("--precision", default="fp32,bf16", help="comma list of fp32, bf16")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args(argv)

    precisions = [x.strip() for x in args.precision.split(",") if x.strip()]
    results: dict[str, dict[str, dict[str, float]]] = {}
    for precision in precisions:
        for _ in range(args.rounds):
            for impl in IMPLEMENTATIONS:
                r = run_isolated(impl, precision, args)
                best = results.setdefault(precision, {}).get(impl)
                if best is None or r["examples_per_s"] > best["examples_per_s"]:
                    results[precision][impl] = r
                print(f"  {precision:5s} {impl:8s} {r['examples_per_s']:8.2f} ex/s  "
                      f"peak {r['peak_mb']:8.0f} MB", file=sys.stderr, flush=True)

    print(f"\nLXMERT {args.l_layers}/{args.r_layers}/{args.x_layers} training step "
          f"(fwd+bwd+AdamW), batch {args.batch_size}, {args.tokens} tokens, {args.regions} "
          f"regions x {args.feat_dim}, {args.num_qa_labels} answers, device {args.device}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, best of {args.rounds}")
    header = (f"{'precision':9s} | {'vlbench ex/s':>12s} | {'HF ex/s':>9s} | {'ratio':>6s} | "
              f"{'vlbench peak MB':>15s} | {'HF peak MB':>10s}")
    print(header)
    print("-" * len(header))
    for precision in precisions:
        ours, theirs = results[precision]["vlbench"], results[precision]["hf"]
        ratio = ours["examples_per_s"] / theirs["examples_per_s"]
        print(f"{precision:9s} | {ours['examples_per_s']:12.2f} | {theirs['examples_per_s']:9.2f} "
              f"| {ratio:5.2f}x | {ours['peak_mb']:15.0f} | {theirs['peak_mb']:10.0f}")
    if args.json:
        print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
