"""P-Scanner scanning speed (issue 5 goal: 5,000 titles in under 2 minutes with smollm2-135m on
this CPU, about 60% of the matmul peak).

Scores the LastFM artists followed by Steam games (the first ``--titles`` distinct titles) with
a scanner: a saved one (``--scanner DIR``) or a freshly initialised LoRA scanner on the
backbone (speed does not depend on the weights). Prints seconds, titles/s, and the achieved
GFLOP/s against the matmul peak measured in the same run (2 x non-embedding parameters per
prompt token, plus the LM head once per title).

    python benchmarks/scan_speed.py --titles 5000 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_speed import matmul_peak  # noqa: E402

from recbackdoor.models.machine import one_line as machine  # noqa: E402


def catalog_titles(n: int) -> list[str]:
    titles: list[str] = []
    for path in (DATA / "lastfm" / "llara" / "id2name.txt", DATA / "steam" / "llara" / "id2name.txt"):
        lines = path.read_text(encoding="utf-8").splitlines()
        titles += [ln.split("::", 1)[1] for ln in lines if "::" in ln]
    titles = list(dict.fromkeys(titles))
    if len(titles) < n:
        sys.exit(f"error: only {len(titles)} titles in LastFM + Steam; pass --titles <= {len(titles)}")
    return titles[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--titles", type=int, default=5000)
    ap.add_argument("--scanner", default=None, help="a saved scanner folder (default: fresh LoRA scanner)")
    ap.add_argument("--backbone", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    args = ap.parse_args()

    import torch

    from recbackdoor.defense.pscanner.optimise import add_lora
    from recbackdoor.defense.pscanner.scanner import PScanner, load_scanner, scanner_prompt
    from recbackdoor.models.backbones import load_backbone

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.scanner:
        scanner = load_scanner(args.scanner, batch_size=args.batch_size)
    else:
        base, tok = load_backbone(args.backbone)
        scanner = PScanner(add_lora(base, 8, 16, seed=0), tok, backbone=args.backbone, domain="music",
                           batch_size=args.batch_size)
    model, tok = scanner.model, scanner.tokenizer
    dtype = next(model.parameters()).dtype
    titles = catalog_titles(args.titles)
    tokens = sum(len(tok.encode(scanner_prompt(t, scanner.domain), add_special_tokens=False)) for t in titles)
    print(f"machine: {machine()}")
    print(f"settings: {args.titles} titles (LastFM + Steam), backbone {scanner.backbone}, {dtype}, "
          f"batch {args.batch_size}, {tokens / len(titles):.1f} prompt tokens per title")

    peak_before, _ = matmul_peak(dtype)
    scanner.progress = True
    t0 = time.perf_counter()
    scanner.title_scores(titles)
    seconds = time.perf_counter() - t0
    peak_after, _ = matmul_peak(dtype)
    peak = max(peak_before, peak_after)

    embed = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    body = sum(p.numel() for p in model.parameters()) - embed.numel() - (head.numel() if head is not embed else 0)
    flops = 2 * body * tokens + 2 * head.numel() * len(titles)
    gflops = flops / seconds / 1e9
    print(f"scanned {len(titles)} titles in {seconds:.1f} s: {len(titles) / seconds:.1f} titles/s, "
          f"{tokens / seconds:.0f} tokens/s")
    print(f"achieved {gflops:.0f} GFLOP/s = {gflops / peak:.0%} of the matmul peak {peak:.0f} GFLOP/s "
          f"(measured before/after: {peak_before:.0f} / {peak_after:.0f})")
    print(f"seconds={seconds:.1f} mfu={gflops / peak:.2f}")


if __name__ == "__main__":
    main()
