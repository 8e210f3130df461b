"""A causal LM that reads titles in context, for the LM-based baselines (ONION, BKI).

Each title is read after a short domain context (``A movie title:``) so the first word is
predicted from something; the title's tokens are appended to the context's tokens (not
re-tokenised together), so every variant of a title shares the same context tokens.

One forward pass gives both things the baselines need, and both are cached per (domain, text),
so ONION and BKI sharing a ``TitleLM`` (and later calls on mostly the same catalog) pay once:
- ``nll``: mean negative log-likelihood of the title's tokens (log-perplexity);
- ``embed``: the mean final hidden state over the title's tokens.
The output head is applied only to the positions that predict a title token (not to the
context or padding): on a 135M model with a 49k vocabulary that head is a third of the cost.
Texts are sorted by length and padded per batch; results come back in input order.

``model_dir`` reads a trained victim instead (a directory written by ``recbackdoor train``,
loaded with :func:`recbackdoor.victims.load_victim`: backbone + its LoRA adapter), as BKI is
defined on the model being defended; ``source`` says which of the two an instance reads.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# A domain noun for prompts/context ("a movie title: ..."); here, not in .common, which
# imports this module (one direction only).
DOMAIN_NOUN = {"movies": "movie", "music": "music artist", "games": "video game"}


class TitleLM:
    """Batched, cached title log-perplexities and embeddings from a registry backbone."""

    def __init__(
        self,
        backbone: str = "smollm2-135m",
        batch_size: int = 64,
        device: Any = None,
        dtype: Any = None,
        progress: bool = False,
        model_dir: str | None = None,
    ) -> None:
        if model_dir is not None:
            from ...victims import load_victim

            self.model, self.tokenizer, info = load_victim(str(model_dir), device=device, dtype=dtype)
            self.backbone = str(info.get("backbone") or backbone)
            self.victim_info = info
            if info.get("victim") is not None:
                self.source = f"victim {model_dir} ({info['victim']} LoRA on {self.backbone})"
            else:
                self.source = f"backbone {model_dir} (given as the model; no adapter)"
        else:
            from ...models.backbones import load_backbone

            self.backbone = backbone
            self.model, self.tokenizer = load_backbone(backbone, device=device, dtype=dtype)
            self.victim_info = None
            self.source = f"base backbone {backbone} (no victim model given)"
        self.batch_size = batch_size
        self.progress = progress
        self._cache: dict[tuple[str, str], tuple[float, np.ndarray]] = {}

    def _ids(self, text: str, domain: str) -> tuple[list[int], int]:
        """Context + title token ids, and where the title's tokens start."""
        tok = self.tokenizer
        context = tok(f"A {DOMAIN_NOUN[domain]} title:", add_special_tokens=False).input_ids
        if tok.bos_token_id is not None:
            context = [tok.bos_token_id, *context]
        title = tok(" " + text, add_special_tokens=False).input_ids
        return context + title, len(context)

    def run(self, texts: Sequence[str], domain: str = "movies", want: str = "nll") -> np.ndarray:
        """``want="nll"``: shape (n,); ``want="embed"``: shape (n, hidden size)."""
        if want not in ("nll", "embed"):
            raise ValueError(f"want must be 'nll' or 'embed', not {want!r}")
        missing = [t for t in dict.fromkeys(texts) if (domain, t) not in self._cache]
        if missing:
            self._compute(missing, domain)
        if not texts:
            return np.zeros((0,) if want == "nll" else (0, self.model.config.hidden_size))
        pick = 0 if want == "nll" else 1
        return np.stack([np.asarray(self._cache[(domain, t)][pick]) for t in texts]).astype(np.float64)

    def _compute(self, texts: list[str], domain: str) -> None:
        import torch
        import torch.nn.functional as F
        from tqdm.auto import tqdm

        encoded = [self._ids(t, domain) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: len(encoded[i][0]))
        decoder, head = self.model.get_decoder(), self.model.get_output_embeddings()
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        batches = range(0, len(order), self.batch_size)
        for start in tqdm(batches, desc="LM titles", disable=not self.progress, leave=False):
            idx = order[start : start + self.batch_size]
            width = max(len(encoded[i][0]) for i in idx)
            ids = torch.full((len(idx), width), pad, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            title_mask = torch.zeros((len(idx), width), dtype=torch.bool)
            for row, i in enumerate(idx):
                seq, title_start = encoded[i]
                ids[row, : len(seq)] = torch.tensor(seq)
                attn[row, : len(seq)] = 1
                title_mask[row, title_start : len(seq)] = True
            ids, attn, title_mask = ids.to(device), attn.to(device), title_mask.to(device)
            with torch.inference_mode():
                hidden = decoder(input_ids=ids, attention_mask=attn).last_hidden_state
                # embedding: mean final hidden state over the title's tokens
                m = title_mask.unsqueeze(-1).to(hidden.dtype)
                emb = ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).float().cpu().numpy()
                # NLL: position p predicts token p + 1; keep the positions whose next token is
                # a title token, and apply the output head to those alone
                predicts = title_mask[:, 1:]
                rows = predicts.nonzero(as_tuple=True)[0]
                logits = head(hidden[:, :-1][predicts]).float()
                nll = F.cross_entropy(logits, ids[:, 1:][predicts], reduction="none")
                total = torch.zeros(len(idx), device=device).index_add_(0, rows, nll)
                count = predicts.sum(1).clamp(min=1)
                mean_nll = (total / count).cpu().numpy()
            for row, i in enumerate(idx):
                self._cache[(domain, texts[i])] = (float(mean_nll[row]), emb[row])
