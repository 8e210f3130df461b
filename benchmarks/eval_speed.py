"""Evaluation speed on LastFM prompts: LLaRA's reference procedure against our protocols.

Measured on the same test prompts (template 0):
- reference: LLaRA's greedy generation, data order, batch 1 and batch B, left padding, up to
  64 new tokens, stopping only at EOS (no newline stop), as LLaRA's code does;
- generate: ours (prompts grouped by length, stops once every row has produced a newline);
- score: candidates ranked by answer log-likelihood, each prompt computed once and its KV cache
  reused: ``tree`` (a prompt's candidates packed in one row, block mask; batch 1 and B) and
  ``expand`` (the cache copied per candidate; batch B);
- naive: the same log-likelihoods on full prompt + answer sequences (no cache reuse).

Per method: seconds per sample and achieved GFLOP/s = 2 x params x tokens processed / s (token
positions through the decoder, counted by a hook, padding included), against the peak of a
2048^3 torch matmul in the same dtype, re-measured next to every method (the machine may be
shared); also the share counting only the weight matmuls really run (the LM head only where
logits are computed). Also: agreement between the generate answer and the score top-1 on valid
answers. Last line: ``speedup=X mfu=Y``: X = reference s/sample at the batch size of our fastest
protocol run / that run's s/sample, each s/sample first multiplied by the matmul peak measured
next to it (on a shared machine the load changes between runs; this keeps it from counting as
speed; the raw ratios are printed too); Y = achieved FLOP/s of score / peak.

    nice -n 10 .venv/bin/python benchmarks/eval_speed.py --samples 16
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from recbackdoor.models.machine import one_line as machine


def matmul_peak(dtype: Any, device: Any = "cpu", size: int = 2048, reps: int = 10) -> float:
    """Best GFLOP/s of three rounds of ``reps`` ``size``^3 matmuls in ``dtype``."""
    import torch

    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    sync = torch.cuda.synchronize if a.is_cuda else (lambda: None)
    for _ in range(2):
        a @ b  # warm-up
    best = 0.0
    for _ in range(3):
        sync()
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync()
        best = max(best, 2 * size**3 * reps / (time.perf_counter() - start) / 1e9)
    return best


class TokenCounter:
    """Counts the token positions the decoder processes (padding included: it is computed) and
    the rows that go through the LM head (prompt positions whose logits are skipped do not)."""

    def __init__(self, model: Any) -> None:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.positions = 0
        self.logit_rows = 0
        base.model.register_forward_pre_hook(self._count_positions, with_kwargs=True)
        base.get_output_embeddings().register_forward_hook(self._count_logits)
        embed = base.get_input_embeddings().weight
        head = base.get_output_embeddings().weight
        total = sum(p.numel() for p in model.parameters())
        self.params = total
        self.head_params = head.numel()
        self.body_params = total - embed.numel() - (0 if head is embed else head.numel())

    def reset(self) -> None:
        self.positions = self.logit_rows = 0

    def _count_positions(self, module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs["inputs_embeds"][..., 0]
        self.positions += int(ids.numel())

    def _count_logits(self, module: Any, inputs: tuple, output: Any) -> None:
        self.logit_rows += int(output.numel() // output.shape[-1])

    def nominal_flops(self) -> float:
        """The brief's definition: 2 x params x tokens processed."""
        return 2.0 * self.params * self.positions

    def matmul_flops(self) -> float:
        """Weight matmuls actually run (attention scores and element-wise ops not counted)."""
        return 2.0 * (self.body_params * self.positions + self.head_params * self.logit_rows)


def timed(
    name: str,
    fn: Callable[[], Any],
    counter: TokenCounter,
    n: int,
    peaks: list[float],
    measure_peak: Callable[[], float],
) -> dict[str, Any]:
    """Run ``fn`` once; FLOP/s against the mean of the matmul peaks just before and after (the
    machine may be shared, so the peak is re-measured next to every run)."""
    counter.reset()
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    before = peaks[-1]
    peaks.append(measure_peak())
    peak = (before + peaks[-1]) / 2
    gflops = counter.nominal_flops() / seconds / 1e9
    exact = counter.matmul_flops() / seconds / 1e9
    row = {
        "name": name,
        "s_per_sample": seconds / n,
        "gflops": gflops,
        "mfu": gflops / peak,
        "mfu_matmul": exact / peak,
        "work": seconds / n * peak,  # s/sample x peak: load-adjusted cost (peak-GFLOP/sample)
        "value": value,
    }
    print(
        f"{name:<18} {seconds / n:7.3f} s/sample {counter.positions / n:6.0f} tokens/sample "
        f"{gflops:6.1f} GFLOP/s = {100 * gflops / peak:5.1f}% of peak {peak:.0f} "
        f"(matmuls run: {100 * exact / peak:5.1f}%)",
        flush=True,
    )
    return row


def reference_generate(
    model: Any, tokenizer: Any, prompts: list[str], batch_size: int, max_new_tokens: int = 64
) -> list[str]:
    """LLaRA's procedure: data order, left padding, greedy, EOS-only stop; first line kept."""
    import torch

    from recbackdoor.models.prompts import prompt_ids

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    outs = []
    with torch.inference_mode():
        for start in range(0, len(prompts), batch_size):
            rows = [prompt_ids(tokenizer, p) for p in prompts[start : start + batch_size]]
            width = max(len(r) for r in rows)
            ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])
            mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])
            gen = model.generate(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                temperature=None,
                top_p=None,
                top_k=None,
            )
            texts = tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
            outs.extend(t.split("\n", 1)[0] for t in texts)
    return outs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=16, help="LastFM test prompts to use")
    parser.add_argument("--backbone", default="smollm2-135m", help="backbone name or path")
    parser.add_argument("--model", default=None, help="a trained victim folder instead")
    parser.add_argument("--data", default="../shared/data/lastfm/llara")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch (B)")
    parser.add_argument("--dtype", default="auto", help="auto: as the library picks (bf16 where native, else fp32) | bf16 | fp32")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-batch1", action="store_true", help="skip the batch-1 runs")
    parser.add_argument("--skip-naive", action="store_true", help="skip the slow naive scoring")
    args = parser.parse_args()

    import torch
    import transformers

    from recbackdoor.data.prepare import prepare_dataset
    from recbackdoor.eval.protocols import (
        generate_protocol,
        naive_score,
        parse_generation,
        score_protocol,
    )
    from recbackdoor.models.backbones import resolve_device, resolve_dtype
    from recbackdoor.models.prompts import sample_prompt
    from recbackdoor.victims import load_victim

    transformers.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    name = args.model or args.backbone
    n, b = args.samples, args.batch_size
    print(f"machine: {machine()}; transformers {transformers.__version__}")
    print(f"settings: model {name}, {dtype}, {device}, {n} samples, batch B={b}, data {args.data}")

    dataset = prepare_dataset("lastfm", args.data, seed=0)
    samples = dataset.test[:n]
    n = len(samples)
    built = [sample_prompt(s, dataset.catalog, template=0) for s in samples]
    prompts = [p for p, _ in built]
    titles = [list(t) for _, t in built]
    targets = [s.candidates.index(s.target) for s in samples]
    model, tok, _ = load_victim(name, dtype=dtype, device=device)
    counter = TokenCounter(model)
    print(f"model: {counter.params / 1e6:.1f}M parameters; {n} prompts of 20 candidates")
    score_protocol(model, tok, prompts[:1], titles[:1])  # warm-up (and one-off set-up:
    generate_protocol(model, tok, prompts[:1], max_new_tokens=1)  # the newline token table)

    def measure_peak() -> float:
        return matmul_peak(dtype, device)

    peaks = [measure_peak()]
    print(f"matmul peak: {peaks[0]:.1f} GFLOP/s ({dtype})", flush=True)

    rows: dict[str, dict[str, Any]] = {}

    def run(key: str, label: str, batch: int, fn: Callable[[], Any]) -> None:
        rows[key] = timed(label, fn, counter, n, peaks, measure_peak)
        rows[key]["batch"] = batch

    batches = [b] if args.skip_batch1 or b == 1 else [1, b]
    for bs in batches:
        run(
            f"ref{bs}",
            f"reference b{bs}",
            bs,
            lambda bs=bs: reference_generate(model, tok, prompts, bs),
        )
    run("gen", f"generate b{b}", b, lambda: generate_protocol(model, tok, prompts, batch_size=b))
    for bs in batches:
        run(f"score{bs}", f"score tree b{bs}", bs,
            lambda bs=bs: score_protocol(model, tok, prompts, titles, batch_size=bs, method="tree"))  # fmt: skip
    run("expand", f"score expand b{b}", b,
        lambda: score_protocol(model, tok, prompts, titles, batch_size=b, method="expand"))  # fmt: skip
    if not args.skip_naive:
        run("naive", "score naive b1", 1, lambda: naive_score(model, tok, prompts, titles))

    gen_pred = [parse_generation(o, t) for o, t in zip(rows["gen"]["value"], titles, strict=True)]
    valid = [i for i, p in enumerate(gen_pred) if p is not None]
    ref_lines = rows[f"ref{b}"]["value"]
    same = np.mean([x == y for x, y in zip(ref_lines, rows["gen"]["value"], strict=True)])
    print(f"generate: first line equal to the reference's in {100 * same:.0f}% of prompts")
    scores = rows[f"score{b}"]["value"]
    for mode in ("sum", "mean"):
        top = scores.predictions(mode)
        agree = f"{100 * np.mean([top[i] == gen_pred[i] for i in valid]):.0f}%" if valid else "n/a"
        hr = np.mean([top[i] == targets[i] for i in range(n)])
        print(
            f"score[{mode}]: HR@1 {hr:.3f}; agrees with generate on {agree} of {len(valid)} "
            f"valid answers (generate ValidRatio {len(valid) / n:.2f}, HR@1 "
            f"{np.mean([gen_pred[i] == targets[i] for i in valid]) if valid else 0:.3f})"
        )
    for key in ("expand", "naive"):
        if key in rows:
            diff = max(
                float(np.max(np.abs(x - y)))
                for x, y in zip(scores.logprob_sum, rows[key]["value"].logprob_sum, strict=True)
            )
            other = rows[key]["value"].predictions()
            same_top = np.mean([x == y for x, y in zip(scores.predictions(), other, strict=True)])
            print(
                f"score tree vs {key}: max |log-prob difference| {diff:.4f} ({dtype}), "
                f"same top-1 in {100 * same_top:.0f}%"
            )
    print("reference / our fastest at the same batch size (raw s/sample; load-adjusted):")
    for bs in batches:
        ours = [r for k, r in rows.items() if r["batch"] == bs and k not in ("naive",)]
        ours = [r for r in ours if not r["name"].startswith("reference")]
        best = min(ours, key=lambda r: r["work"])
        ref = rows[f"ref{bs}"]
        raw, adjusted = ref["s_per_sample"] / best["s_per_sample"], ref["work"] / best["work"]
        print(f"  batch {bs}: {best['name'].strip()}: {raw:.2f}x; {adjusted:.2f}x")
    ours = [r for k, r in rows.items() if not k.startswith("ref") and k != "naive"]
    best = min(ours, key=lambda r: r["work"])
    speedup = rows[f"ref{best['batch']}"]["work"] / best["work"]
    score_row = best if best["name"].startswith("score") else rows[f"score{b}"]
    print(f"matmul peaks over the run: {', '.join(f'{p:.0f}' for p in peaks)} GFLOP/s")
    print(f"best protocol: {best['name'].strip()} ({best['s_per_sample']:.3f} s/sample)")
    print(f"score: {100 * score_row['mfu_matmul']:.0f}% of peak counting only the matmuls run")
    print(f"speedup={speedup:.2f} mfu={score_row['mfu']:.2f}")


if __name__ == "__main__":
    main()
