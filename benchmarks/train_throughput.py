"""Training throughput: vlbench's batch loader vs its training step, and vlbench's LXMERT vs HF's.

Three measurements, in one run:

``loader``  Examples/s the CPU batch builder supplies (``vlbench.engine.loader``, in the training
            process as on CPU) for the default ``vlbench train --model lxmert --task gqa`` job on
            the embedded synthetic data, against examples/s one training step of the base preset
            consumes on those batches (forward, task loss, backward, clipping, AdamW: the
            trainer's step). Target: the loader supplies >= 5x.
``cpu``     vlbench's LXMERT + QA head vs HF transformers' ``LxmertForQuestionAnswering``, one
            training step (forward, cross-entropy on the answer logits, backward, AdamW) with
            identical shapes and inputs, fp32 (``--precision fp32,bf16`` adds bf16 autocast), for
            the tiny preset (the default job's shapes and batch) and the base preset (published
            9/5/5, hidden 768, batch 16, 20 tokens, 36 regions x 2048, 3129 answers). Goals:
            >= 1.5x (tiny), >= 1.3x (base).
``gpu``     Only where CUDA is available: base preset, batch 64, bf16 autocast, TF32, fused AdamW,
            vs HF with the same settings, eager and under ``torch.compile`` (both models compiled,
            as ``train.compile=true`` does); the ratio and MFU against the GPU's bf16 peak
            (``vlbench.engine.speed``: FLOPs counted on a forward, x3 for a training step).
            Goals: >= 1.3x and >= 35% MFU. ``--gpu-batch 64,256`` adds larger batches.

For ``cpu`` and ``gpu`` the two implementations live in two worker processes (so each peak
memory is its own) and their timed steps alternate, so load from other processes falls on both
alike; throughput comes from the median step time. Both use the same optimizer: plain AdamW on
CPU (what vlbench's trainer runs there; fused AdamW gives other bits), fused on CUDA.

    python benchmarks/train_throughput.py                       # loader + cpu (+ gpu if present)
    python benchmarks/train_throughput.py --parts cpu --precision fp32,bf16 --steps 6 --warmup 1
    python benchmarks/train_throughput.py --parts gpu --gpu-steps 50 --gpu-compile off,on
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

IMPLEMENTATIONS = ("vlbench", "hf")


@dataclass(frozen=True)
class Shapes:
    """One benchmark setting: model sizes, batch shapes, device and precision."""

    name: str
    hidden: int
    heads: int
    ffn: int
    l_layers: int
    r_layers: int
    x_layers: int
    vocab: int
    feat_dim: int
    regions: int
    answers: int
    batch: int
    tokens: int = 20
    dropout: float = 0.1
    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False  # torch.compile the forward (and so the backward) of both models


#: the default ``vlbench train --model lxmert --task gqa`` job: tiny preset fitted to the embedded
#: synthetic GQA (vocabulary 104, 8 regions x 64-d features, 27 answers, no dropout), batch 64
TINY = Shapes("tiny", 192, 6, 768, 2, 1, 1, vocab=104, feat_dim=64, regions=8, answers=27, batch=64, dropout=0.0)
#: the published LXMERT (Tan & Bansal 2019) with VQA's answer table, batch 16 on CPU
BASE = Shapes("base", 768, 12, 3072, 9, 5, 5, vocab=30522, feat_dim=2048, regions=36, answers=3129, batch=16)
GPU_BASE = replace(BASE, name="base (GPU)", batch=64, device="cuda", precision="bf16")


# -- one implementation's training step, in a worker process -------------------------------------
def build(impl: str, shapes: Shapes):
    """The model (backbone + QA head) as one module, and a function mapping a batch to logits."""
    import torch

    torch.manual_seed(0)
    sizes = dict(hidden_size=shapes.hidden, num_attention_heads=shapes.heads, intermediate_size=shapes.ffn,
                 l_layers=shapes.l_layers, r_layers=shapes.r_layers, x_layers=shapes.x_layers,
                 vocab_size=shapes.vocab, visual_feat_dim=shapes.feat_dim,
                 hidden_dropout_prob=shapes.dropout, attention_probs_dropout_prob=shapes.dropout)
    if impl == "hf":
        import transformers

        model = transformers.LxmertForQuestionAnswering(
            transformers.LxmertConfig(**sizes, num_qa_labels=shapes.answers))
        return model, lambda b: model(**b).question_answering_score

    from vlbench.models.heads import QAHead
    from vlbench.models.lxmert.config import LxmertConfig
    from vlbench.models.lxmert.modeling import LxmertModel

    config = LxmertConfig.from_preset("base", **sizes)
    model = torch.nn.ModuleDict({
        "lxmert": LxmertModel(config),
        "answer_head": QAHead(config.hidden_size, shapes.answers),
    })
    return model, lambda b: model["answer_head"](model["lxmert"](**b).pooled)


def make_batch(shapes: Shapes, device: str) -> tuple[dict[str, Any], Any]:
    import torch

    g = torch.Generator().manual_seed(1)
    b, t, r = shapes.batch, shapes.tokens, shapes.regions
    lengths = torch.randint(max(2, t // 2), t + 1, (b,), generator=g)  # padded questions
    batch = dict(
        input_ids=torch.randint(min(1000, shapes.vocab // 2), shapes.vocab, (b, t), generator=g),
        attention_mask=(torch.arange(t)[None, :] < lengths[:, None]).long(),
        token_type_ids=torch.zeros(b, t, dtype=torch.long),
        visual_feats=torch.randn(b, r, shapes.feat_dim, generator=g),
        visual_pos=torch.rand(b, r, 4, generator=g),
    )
    labels = torch.randint(0, shapes.answers, (b,), generator=g)
    return {k: v.to(device) for k, v in batch.items()}, labels.to(device)


def worker(impl: str, shapes: Shapes, warmup: int, threads: int, conn: Any) -> None:
    """Hold one model; answer "ready" (with its FLOPs per example), then one step's seconds per
    "step" message, then its peak memory."""
    import torch

    from vlbench.engine import speed

    try:
        if threads:
            torch.set_num_threads(threads)
        device = torch.device(shapes.device)
        cuda = device.type == "cuda"
        speed.setup_device(device)  # TF32 on CUDA; nothing on CPU
        model, logits_of = build(impl, shapes)
        model.to(device).train()
        optimizer = speed.adamw([{"params": list(model.parameters())}], 1e-5, device)
        batch, labels = make_batch(shapes, shapes.device)
        autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=shapes.precision == "bf16")

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

        flops = None
        if cuda:  # counted on the vlbench and HF models alike; the same products either way
            flops = speed.train_flops_per_example(_BatchModule(logits_of, model), batch, shapes.batch)
        if shapes.compile:  # compiled on the first warm-up step
            logits_of = torch.compile(logits_of)
        for _ in range(warmup):
            step()
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        conn.send(("ready", flops))
        while conn.recv() == "step":
            conn.send(step())
        conn.send(torch.cuda.max_memory_allocated() / 2**20 if cuda else peak_rss_mb())
    except Exception as exc:  # report, don't hang the parent
        conn.send(f"error: {type(exc).__name__}: {exc}")


def peak_rss_mb() -> float:
    """This process's peak resident set. ``VmHWM`` where Linux has it: ``ru_maxrss`` survives
    exec, so a spawned worker would report its parent's peak if that was higher."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _BatchModule:
    """``logits_of`` with the train()/eval() switches of ``model``, for FLOP counting."""

    def __init__(self, logits_of: Any, model: Any):
        self.logits_of, self.model = logits_of, model

    @property
    def training(self) -> bool:
        return self.model.training

    def train(self, mode: bool = True) -> Any:
        return self.model.train(mode)

    def eval(self) -> Any:
        return self.model.eval()

    def __call__(self, batch: Any) -> Any:
        return self.logits_of(batch)


def measure_pair(shapes: Shapes, steps: int, warmup: int, threads: int) -> dict[str, dict[str, Any]]:
    """Both implementations resident in their own processes, timed step by step in
    alternation, so load from other processes falls on both alike."""
    ctx = mp.get_context("spawn")
    conns, procs, flops = {}, [], {}
    for impl in IMPLEMENTATIONS:  # one at a time: their warm-ups must not overlap
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=worker, args=(impl, shapes, warmup, threads, child), daemon=True)
        proc.start()
        procs.append(proc)
        conns[impl] = parent
        reply = parent.recv()
        if not (isinstance(reply, tuple) and reply[0] == "ready"):
            raise SystemExit(f"{impl} {shapes.name}: {reply}")
        flops[impl] = reply[1]
    times: dict[str, list[float]] = {impl: [] for impl in IMPLEMENTATIONS}
    for i in range(steps):
        order = IMPLEMENTATIONS if i % 2 == 0 else IMPLEMENTATIONS[::-1]
        for impl in order:
            conns[impl].send("step")
            times[impl].append(conns[impl].recv())
        print(f"  {shapes.name} step {i + 1}/{steps}: "
              + ", ".join(f"{impl} {times[impl][-1]:.3f}s" for impl in IMPLEMENTATIONS),
              file=sys.stderr, flush=True)
    results = {}
    for impl in IMPLEMENTATIONS:
        conns[impl].send("done")
        median = statistics.median(times[impl])
        results[impl] = {"examples_per_s": shapes.batch / median, "step_seconds": times[impl],
                         "peak_mb": conns[impl].recv(), "train_flops_per_example": flops[impl]}
    for proc in procs:
        proc.join()
    return results


# -- the loader against the trainer's step -------------------------------------------------------
def measure_loader(steps: int, warmup: int, threads: int, workers: int, data_dir: str | None) -> dict[str, Any]:
    """The gqa job's batches (the embedded synthetic data, or ``data_dir``): built by the
    loader vs consumed by a base-preset step."""
    import torch
    from torch import nn

    from vlbench.engine import loader, speed
    from vlbench.engine.evaluate import eval_examples
    from vlbench.engine.session import new_session
    from vlbench.engine.trainer import epoch_order, optimizer_groups, split_loss

    if threads:
        torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        s = new_session("lxmert", "gqa", data_dir=data_dir, out=out, overrides={"model.preset": "base"},
                        say=lambda _: None)
    cfg, task = s.cfg.train, s.task
    examples = eval_examples(task, task.train_split)
    data = loader.EpochBatches(task, examples, epoch_order(len(examples), 0, 0), cfg.batch_size, 0, 0)
    n_batches = min(len(data), max(20, 4 * steps))
    start = time.perf_counter()
    built = 0
    for i, (_batch, _, n) in enumerate(loader.epoch_batches(data, 0, workers, pin_memory=False)):
        if i == n_batches:
            break
        built += n
    loader_eps = built / (time.perf_counter() - start)

    model, device = s.model.train(), torch.device("cpu")
    optimizer = speed.adamw(optimizer_groups(model, cfg.weight_decay), cfg.lr, device)
    step_times = []
    for i in range(warmup + steps):
        batch, _, n = data[i % len(data)]
        t0 = time.perf_counter()
        loss, _ = split_loss(task.loss(model(batch), batch))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if i >= warmup:
            step_times.append(time.perf_counter() - t0)
        print(f"  loader: base step {i + 1}/{warmup + steps}: {time.perf_counter() - t0:.2f}s",
              file=sys.stderr, flush=True)
    step_eps = cfg.batch_size / statistics.median(step_times)
    return {"loader_examples_per_s": loader_eps, "step_examples_per_s": step_eps,
            "ratio": loader_eps / step_eps, "batch_size": cfg.batch_size, "loader_workers": workers,
            "params": sum(p.numel() for p in model.parameters()), "step_seconds": step_times}


def _items(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


# -- report ---------------------------------------------------------------------------------------
def describe(shapes: Shapes) -> str:
    return (f"{shapes.l_layers}/{shapes.r_layers}/{shapes.x_layers} layers, hidden {shapes.hidden}, "
            f"batch {shapes.batch}, {shapes.tokens} tokens, {shapes.regions} regions x {shapes.feat_dim}, "
            f"{shapes.answers} answers, dropout {shapes.dropout}, {shapes.device} {shapes.precision}"
            + (", torch.compile" if shapes.compile else ""))


def print_pairs(pairs: dict[str, tuple[Shapes, dict[str, Any]]], peak: float | None) -> None:
    header = (f"{'setting':10s} | {'vlbench ex/s':>12s} | {'HF ex/s':>9s} | {'ratio':>6s} | "
              f"{'vlbench MFU':>11s} | {'HF MFU':>6s} | {'vlbench peak MB':>15s} | {'HF peak MB':>10s}")
    print(header)
    print("-" * len(header))
    for name, (shapes, res) in pairs.items():
        ours, theirs = res["vlbench"], res["hf"]
        ratio = ours["examples_per_s"] / theirs["examples_per_s"]
        mfus = [_mfu(r, peak) for r in (ours, theirs)]
        print(f"{name:10s} | {ours['examples_per_s']:12.2f} | {theirs['examples_per_s']:9.2f} | {ratio:5.2f}x | "
              f"{mfus[0]:>11s} | {mfus[1]:>6s} | {ours['peak_mb']:15.0f} | {theirs['peak_mb']:10.0f}")
        print(f"{'':10s}   ({describe(shapes)})")


def _mfu(result: dict[str, Any], peak: float | None) -> str:
    from vlbench.engine import speed

    if not peak or not result["train_flops_per_example"]:
        return "-"
    result["mfu"] = speed.mfu(result["examples_per_s"], result["train_flops_per_example"], peak)
    return f"{100 * result['mfu']:.1f}%"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="loader,cpu,gpu", help="comma list of loader, cpu, gpu")
    p.add_argument("--presets", default="tiny,base", help="CPU presets to compare with HF")
    p.add_argument("--precision", default="fp32", help="CPU precisions, comma list of fp32, bf16 (autocast)")
    p.add_argument("--steps", type=int, default=5, help="timed CPU training steps per preset")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before timing")
    p.add_argument("--gpu-steps", type=int, default=50, help="timed GPU training steps")
    p.add_argument("--gpu-warmup", type=int, default=10, help="untimed GPU steps (compilation included)")
    p.add_argument("--gpu-batch", default="64", help="GPU batch sizes, comma list")
    p.add_argument("--gpu-compile", default="off,on", help="GPU runs eager (off) and/or compiled (on)")
    p.add_argument("--loader-workers", type=int, default=0, help="loader worker processes (0: in-process, "
                                                                 "as the trainer does on CPU)")
    p.add_argument("--data", default=None, help="GQA data directory for the loader part (default: the "
                                                 "embedded synthetic benchmark, as `vlbench train`)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    p.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = p.parse_args(argv)

    import torch

    parts = set(_items(args.parts))
    results: dict[str, Any] = {"command": " ".join(["python", "benchmarks/train_throughput.py", *(argv or sys.argv[1:])])}
    if "loader" in parts:
        r = results["loader"] = measure_loader(args.steps, args.warmup, args.threads, args.loader_workers,
                                               args.data)
        print(f"\nloader vs step, gqa batches of {args.data or 'the embedded synthetic data'} "
              f"(batch {r['batch_size']}), base preset "
              f"({r['params'] / 1e6:.1f}M parameters), CPU, {args.steps} timed steps (median)")
        print(f"loader {r['loader_examples_per_s']:.0f} ex/s ({r['loader_workers']} workers) | "
              f"step {r['step_examples_per_s']:.2f} ex/s | loader/step {r['ratio']:.0f}x (target >= 5x)")
    if "cpu" in parts:
        presets = {"tiny": TINY, "base": BASE}
        settings = {f"{name} {precision}": replace(presets[name], precision=precision)
                    for name in _items(args.presets) for precision in _items(args.precision)}
        pairs = {key: (shapes, measure_pair(shapes, args.steps, args.warmup, args.threads))
                 for key, shapes in settings.items()}
        print(f"\nvlbench LXMERT vs HF LxmertForQuestionAnswering, training step (fwd+bwd+AdamW), CPU, "
              f"{args.steps} timed steps (median) after {args.warmup} warm-up, interleaved "
              f"(goals: tiny >= 1.5x, base >= 1.3x)")
        print_pairs(pairs, None)
        results["cpu"] = {name: {**res, "shapes": asdict(shapes)} for name, (shapes, res) in pairs.items()}
    if "gpu" in parts:
        if not torch.cuda.is_available():
            print("\ngpu: no CUDA device here; not measured")
            results["gpu"] = None
        else:
            from vlbench.engine import speed

            peak = speed.peak_flops(torch.device("cuda"))
            settings = {f"b{batch}{' comp' if mode == 'on' else ''}":
                        replace(GPU_BASE, batch=int(batch), compile=mode == "on")
                        for batch in _items(args.gpu_batch) for mode in _items(args.gpu_compile)}
            pairs = {}
            for key, shapes in settings.items():  # each reported as soon as it is measured
                pairs[key] = (shapes, measure_pair(shapes, args.gpu_steps, args.gpu_warmup, args.threads))
                print_pairs({key: pairs[key]}, peak)
            print(f"\nGPU: {torch.cuda.get_device_name()}, bf16 peak "
                  f"{f'{peak / 1e12:.0f} TFLOP/s' if peak else 'unknown (set VLBENCH_PEAK_TFLOPS)'}, "
                  f"{args.gpu_steps} timed steps (median) after {args.gpu_warmup} warm-up, interleaved "
                  f"(goals at batch 64: >= 1.3x, >= 35% MFU)")
            print_pairs(pairs, peak)
            results["gpu"] = {"device_name": torch.cuda.get_device_name(), "peak_flops": peak,
                              **{name: {**res, "shapes": asdict(shapes)} for name, (shapes, res) in pairs.items()}}
    if args.json:
        print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
