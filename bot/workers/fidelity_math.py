"""Pure arithmetic of distribution fidelity (torch only, no model code): per-position statistics of a variant's
next-token distributions against its base's, the windows a token sequence is cut into, and the summary.

Per scored position t (the logits at t predict token t+1), with log-probabilities taken by log_softmax in float32
over the full vocabulary:

- KL(base || variant) = sum_v p_b(v) * (log p_b(v) - log p_v(v)), nats, exact (no top-k truncation); clamped at 0
  (KL is never negative; float rounding of near-identical rows can give -1e-9);
- top-1 agreement: argmax of both logits equal;
- NLL of the real next token under each model.

A position whose logits hold NaN or inf in either model is not scored: it is counted (variant and base
separately) and left out of every statistic. Sums are float64; nothing is rounded here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Positions:
    """Statistics of one window's finite positions (float64 tensors of equal length)."""

    kl: Any
    agree: Any
    nll_base: Any
    nll_variant: Any
    nonfinite_base: int  # positions whose base logits are not finite
    nonfinite_variant: int  # positions whose variant logits are not finite


def finite_rows(logits) -> Any:
    """Bool mask [positions]: every logit of the row is finite."""
    import torch

    return torch.isfinite(logits).all(dim=-1)


def log_probs(logits) -> Any:
    import torch

    return torch.log_softmax(logits.float(), dim=-1)


def target_nll(logits, targets) -> Any:
    """-log p(target) per row, float64. logits [n, V], targets [n]."""
    import torch

    lp = log_probs(logits)
    return -lp.gather(-1, targets.view(-1, 1).long()).squeeze(-1).to(torch.float64)


def position_stats(base_logits, variant_logits, targets) -> Positions:
    """base_logits, variant_logits: [n, V] (any float dtype, same device); targets: [n] next-token ids."""
    import torch

    if base_logits.shape != variant_logits.shape:
        raise ValueError(f"logit shapes differ: base {tuple(base_logits.shape)}, variant "
                         f"{tuple(variant_logits.shape)} (same vocabulary and window needed)")
    if base_logits.dim() != 2 or targets.shape != base_logits.shape[:1]:
        raise ValueError("expected logits [positions, vocab] and targets [positions]")
    ok_b, ok_v = finite_rows(base_logits), finite_rows(variant_logits)
    ok = ok_b & ok_v
    b, v, t = base_logits[ok], variant_logits[ok], targets[ok].long()
    lp_b, lp_v = log_probs(b), log_probs(v)
    kl = torch.sum(lp_b.exp() * (lp_b - lp_v), dim=-1, dtype=torch.float64).clamp_min(0.0)
    agree = b.argmax(dim=-1) == v.argmax(dim=-1)
    nll_b = -lp_b.gather(-1, t.view(-1, 1)).squeeze(-1).to(torch.float64)
    nll_v = -lp_v.gather(-1, t.view(-1, 1)).squeeze(-1).to(torch.float64)
    return Positions(kl=kl.cpu(), agree=agree.cpu(), nll_base=nll_b.cpu(), nll_variant=nll_v.cpu(),
                     nonfinite_base=int((~ok_b).sum()), nonfinite_variant=int((~ok_v).sum()))


def quantile(values, q: float) -> float:
    """Linear-interpolation quantile (numpy's default), float64."""
    import torch

    return float(torch.quantile(values.to(torch.float64), q))


@dataclass
class Accumulator:
    """Per-position values of one variant over all windows; per-position KL is kept for p99 and max."""

    kl: list = field(default_factory=list)
    agree: list = field(default_factory=list)
    nll_base: list = field(default_factory=list)
    nll_variant: list = field(default_factory=list)
    positions: int = 0  # scored positions, finite or not
    windows: int = 0
    nonfinite: int = 0  # variant positions with NaN/inf logits
    nonfinite_base: int = 0

    def add(self, stats: Positions, positions: int) -> None:
        self.kl.append(stats.kl)
        self.agree.append(stats.agree)
        self.nll_base.append(stats.nll_base)
        self.nll_variant.append(stats.nll_variant)
        self.positions += positions
        self.windows += 1
        self.nonfinite += stats.nonfinite_variant
        self.nonfinite_base += stats.nonfinite_base

    def summary(self) -> dict[str, Any]:
        """FidelityRecord's statistics. Over the finite positions; all None when there is none."""
        import torch

        out: dict[str, Any] = {"tokens": self.positions, "windows": self.windows, "nonfinite": self.nonfinite,
                               "kl_mean": None, "kl_p99": None, "kl_max": None, "top1_agreement": None,
                               "ppl_base": None, "ppl_variant": None, "ppl_ratio": None}
        kl = torch.cat(self.kl) if self.kl else torch.zeros(0, dtype=torch.float64)
        if kl.numel() == 0:
            return out
        agree = torch.cat(self.agree)
        mean_nll_b = float(torch.cat(self.nll_base).mean())
        mean_nll_v = float(torch.cat(self.nll_variant).mean())
        out.update(kl_mean=float(kl.mean()), kl_p99=quantile(kl, 0.99), kl_max=float(kl.max()),
                   top1_agreement=float(agree.to(torch.float64).mean()),
                   ppl_base=math.exp(mean_nll_b), ppl_variant=math.exp(mean_nll_v),
                   ppl_ratio=math.exp(mean_nll_v - mean_nll_b))
        return out


def perplexity(nlls) -> float | None:
    """exp(mean NLL) over finite values (float64); None when there is none."""
    import torch

    if not nlls:
        return None
    values = torch.cat([n.to(torch.float64) for n in nlls])
    values = values[torch.isfinite(values)]
    return math.exp(float(values.mean())) if values.numel() else None


def plan_windows(n_text: int, window: int, tokens: int, prefix: int = 0) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) slices of the text's token ids, in order, until `tokens` positions are scored.

    Each forward pass is `prefix` special tokens (the tokenizer's BOS, repeated at the head of every window) plus
    `window - prefix` text tokens; a pass of L input tokens scores L - 1 positions. The last window is shortened
    to what the budget still needs; a text too short for the budget gives fewer positions (never padded).
    """
    if window < prefix + 2:
        raise ValueError(f"window {window} is too small: needs at least {prefix + 2} tokens")
    if tokens < 1:
        raise ValueError("tokens must be at least 1")
    span = window - prefix
    out: list[tuple[int, int]] = []
    start, left = 0, tokens
    while left > 0 and start < n_text:
        end = min(start + span, n_text)
        scored = prefix + (end - start) - 1
        if scored < 1:
            break
        if scored > left:
            end -= scored - left
            scored = left
        out.append((start, end))
        left -= scored
        start = end
    return out
