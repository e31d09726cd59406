"""Training throughput of vlbench's LXMERT vs HF transformers' ``LxmertForQuestionAnswering``.

One training step = forward, cross-entropy on the answer logits, backward, AdamW step, with
identical shapes (default: published 9/5/5 base model, batch 16, 20 tokens, 36 regions x
2048-d features, 3129 answers) and identical inputs. For each precision the two
implementations live in two worker processes (so each peak memory is its own) and their timed
steps alternate, so load from other processes falls on both alike; throughput comes from the
median step time.

    python benchmarks/train_throughput.py --steps 5 --warmup 2
    python benchmarks/train_throughput.py --device cuda --steps 50 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
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


def worker(impl: str, precision: str, args: argparse.Namespace, conn: Any) -> None:
    """Hold one model; run a training step per "step" message and answer with its seconds."""
    import torch

    try:
        if args.threads:
            torch.set_num_threads(args.threads)
        device = args.device
        model, logits_of = build(impl, args)
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        batch, labels = make_batch(args, device)
        autocast = torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16,
                                  enabled=precision == "bf16")
        cuda = device.startswith("cuda")

        def step() -> float:
            start = time.perf_counter()
            with autocast:
                loss = torch.nn.functional.cross_entropy(logits_of(batch).float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - start

        for _ in range(args.warmup):
            step()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        conn.send("ready")
        while conn.recv() == "step":
            conn.send(step())
        if cuda:
            peak_mb = torch.cuda.max_memory_allocated() / 2**20
        else:  # peak resident set of this process (KiB on Linux)
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        conn.send(peak_mb)
    except Exception as exc:  # report, don't hang the parent
        conn.send(f"error: {type(exc).__name__}: {exc}")


def measure_pair(precision: str, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Both implementations resident in their own processes, timed step by step in
    alternation, so load from other processes falls on both alike."""
    ctx = mp.get_context("spawn")
    conns, procs = {}, []
    for impl in IMPLEMENTATIONS:  # one at a time: their warm-ups must not overlap
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(impl, precision, args, child), daemon=True)
        proc.start()
        procs.append(proc)
        conns[impl] = parent
        if (reply := parent.recv()) != "ready":
            raise SystemExit(f"{impl} {precision}: {reply}")
    times: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    for i in range(args.steps):
        order = IMPLEMENTATIONS if i % 2 == 0 else IMPLEMENTATIONS[::-1]
        for impl in order:
            conns[impl].send("step")
            times[impl].append(conns[impl].recv())
        print(f"  {precision} step {i + 1}/{args.steps}: "
              + ", ".join(f"{impl} {times[impl][-1]:.2f}s" for impl in IMPLEMENTATIONS),
              file=sys.stderr, flush=True)
    results = {}
    for impl in IMPLEMENTATIONS:
        conns[impl].send("done")
        peak = conns[impl].recv()
        median = statistics.median(times[impl])
        results[impl] = {"examples_per_s": args.batch_size / median,
                         "best_examples_per_s": args.batch_size / min(times[impl]),
                         "peak_mb": peak, "step_seconds": times[impl]}
    for proc in procs:
        proc.join()
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--steps", type=int, default=5, help="timed training steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before timing")
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
    results = {precision: measure_pair(precision, args) for precision in precisions}

    print(f"\nLXMERT {args.l_layers}/{args.r_layers}/{args.x_layers} training step "
          f"(fwd+bwd+AdamW), batch {args.batch_size}, {args.tokens} tokens, {args.regions} "
          f"regions x {args.feat_dim}, {args.num_qa_labels} answers, device {args.device}, "
          f"{args.steps} timed steps (median) after {args.warmup} warm-up, interleaved")
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
