"""Training speed of the tallrec LoRA victim: tokens/s, achieved FLOP/s against the machine's
measured matmul peak (MFU), and the padding share with and without length grouping.

    python benchmarks/train_speed.py --steps 5 [--backbone smollm2-135m] [--batch-size 8]

Achieved FLOP/s counts 6 x parameters x (non-padding) tokens / s, the usual training estimate;
with LoRA the frozen weights need no weight gradients, and only the answer positions go
through the LM head, so this is the work a full fine-tune would do for the same tokens (an
"effective" MFU). Ends with one line ``mfu=Y pad=Z``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from recbackdoor.models.machine import one_line as machine

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "lastfm" / "llara"


def matmul_peak(dtype, n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """Best-of-``reps`` GFLOP/s of an n x n x n matmul: per wall second, and per CPU second
    of this process divided by the thread count (what one fully used core set achieves, robust
    to other processes sharing the machine)."""
    import torch

    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.matmul(a, b)  # warm up
    wall = cpu = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.matmul(a, b)
        wall = min(wall, time.perf_counter() - t0)
        cpu = min(cpu, (time.process_time() - c0) / torch.get_num_threads())
    return 2 * n**3 / wall / 1e9, 2 * n**3 / cpu / 1e9


def cpu_timer():
    """A TrainerCallback that records this process's CPU seconds per optimizer step."""
    from transformers import TrainerCallback

    class CpuTimer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[float] = []
            self.c0 = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.c0 = time.process_time()

        def on_step_end(self, args, state, control, **kwargs):
            self.steps.append(time.process_time() - self.c0)

    return CpuTimer()


def load_data(args):
    from recbackdoor.data.io import load_dataset

    if args.data:
        return load_dataset(args.data)
    from recbackdoor.data.prepare import prepare_dataset

    if not DEFAULT_SOURCE.is_dir():
        sys.exit(f"error: {DEFAULT_SOURCE} not found; pass --data DIR (a prepared dataset)")
    return prepare_dataset("lastfm", source=DEFAULT_SOURCE)


def padding_shares(lengths: list[int], batch: int, seed: int) -> tuple[float, float]:
    """(random order, length-grouped order) padding share, as the Trainer's samplers batch."""
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from recbackdoor.models.lora import padding_share

    gen = torch.Generator().manual_seed(seed)
    natural = torch.randperm(len(lengths), generator=gen).tolist()
    grouped = get_length_grouped_indices(lengths, batch, generator=gen)

    def batches(order: list[int]) -> list[list[int]]:
        return [order[i : i + batch] for i in range(0, len(order), batch)]

    return padding_share(lengths, batches(natural)), padding_share(lengths, batches(grouped))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps to time (after 1 warm-up step)")
    parser.add_argument("--backbone", default="smollm2-135m")
    parser.add_argument("--data", default=None, help="prepared dataset dir (default: LastFM from ../shared/data)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--dtype", default="auto", help="weights: auto | bf16 | fp32")
    parser.add_argument("--no-group", action="store_true", help="random batches instead of length-grouped")
    parser.add_argument("--full-logits", action="store_true", help="LM head on every position (slower)")
    parser.add_argument("--pad-samples", type=int, default=4000, help="samples used to measure padding")
    parser.add_argument("--lora-dropout", type=float, default=None, help="default: TrainConfig's")
    parser.add_argument("--attn", default="auto", help="attention: auto (eager on CPU) | eager | sdpa")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from recbackdoor.models.backbones import load_backbone
    from recbackdoor.models.lora import make_train_config, train_lora, weights_and_autocast
    from recbackdoor.victims.tallrec import training_examples

    print(f"machine: {machine()}")
    dataset = load_data(args)
    config = make_train_config(
        backbone=args.backbone, dtype=args.dtype, batch_size=args.batch_size, grad_accum=args.grad_accum,
        max_steps=args.steps + 1, warmup_ratio=0.0, seed=args.seed, group_by_length=not args.no_group,
        answer_logits_only=not args.full_logits, lora_dropout=args.lora_dropout,
        attn_implementation=args.attn,
    )  # fmt: skip
    weights, autocast = weights_and_autocast(config)
    # the peak of the dtype the matmuls run in, as the library picked it (bf16 autocast or bf16
    # weights: bf16; else fp32); a bf16 peak on a CPU without native bf16 is meaningless and slow
    compute = "bf16" if autocast or weights == "bf16" else "fp32"
    peak, cpeak = matmul_peak(torch.bfloat16 if compute == "bf16" else torch.float32)
    print(f"matmul peak (2048^3, {compute}): {peak:.0f} GFLOP/s per wall second; {cpeak:.0f} per CPU second / threads")
    model, tokenizer = load_backbone(config.backbone, dtype=weights)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"settings: backbone {config.backbone} ({n_params / 1e6:.1f}M params, {model.dtype} weights, bf16 autocast {autocast}), "
          f"batch {config.batch_size} x accum {config.grad_accum}, steps {args.steps} (+1 warm-up), "
          f"group_by_length {config.group_by_length}, answer_logits_only {config.answer_logits_only}, "
          f"lora_dropout {config.lora_dropout}, attention {config.attn_implementation}, "
          f"dataset {dataset.name} ({len(dataset.train)} train samples)")  # fmt: skip

    pad_cfg = make_train_config(backbone=config.backbone, max_samples=args.pad_samples, seed=args.seed)
    examples = training_examples(dataset, tokenizer, pad_cfg)
    lengths = [len(e.input_ids) for e in examples]
    pad_random, pad_grouped = padding_shares(lengths, config.batch_size * config.grad_accum, args.seed)
    print(f"prompt+answer tokens: mean {statistics.mean(lengths):.1f}, min {min(lengths)}, max {max(lengths)} "
          f"(first {len(lengths)} samples); padding share: random order {pad_random:.1%}, "
          f"length-grouped {pad_grouped:.1%}")  # fmt: skip

    timer = cpu_timer()
    result = train_lora(model, tokenizer, examples, config, callbacks=[timer])
    timed = result.log[1:]  # drop the warm-up step
    seconds = sum(r["interval_s"] for r in timed)
    cpu_seconds = sum(timer.steps[1:]) / torch.get_num_threads()
    tokens = sum(r["interval_tokens"] for r in timed)
    rate, cpu_rate = tokens / seconds, tokens / cpu_seconds
    achieved, cpu_achieved = 6 * n_params * rate / 1e9, 6 * n_params * cpu_rate / 1e9
    mfu, cpu_mfu = achieved / peak, cpu_achieved / cpeak
    print(f"training: {seconds / len(timed):.2f} s/step, {rate:.0f} tokens/s (non-padding; "
          f"{cpu_rate:.0f} per CPU second / threads), loss {timed[0]['loss']:.3f} -> {timed[-1]['loss']:.3f}")  # fmt: skip
    print(f"achieved {achieved:.0f} GFLOP/s = {mfu:.0%} of the {compute} peak; "
          f"per CPU second: {cpu_achieved:.0f} GFLOP/s = {cpu_mfu:.0%} of the {compute} peak")  # fmt: skip
    # What the hardware actually does: forward + input gradients through the frozen linear
    # layers (no weight gradients), the LM head on the answer window only; attention and LoRA
    # left out. About half of the 6 x params count for a 135M model with a 49k vocabulary.
    emb = model.get_input_embeddings().weight.numel()
    hw = 4 * (n_params - emb) * cpu_rate / 1e9
    print(f"hardware estimate (4 x non-embedding params x tokens): {hw:.0f} GFLOP/s per CPU second "
          f"= {hw / cpeak:.0%} of the {compute} peak")  # fmt: skip
    pad = pad_random if args.no_group else pad_grouped
    print(f"mfu={mfu:.3f} pad={pad:.3f}")  # wall-clock figures; see the CPU-time line above
    return 0


if __name__ == "__main__":
    sys.exit(main())
