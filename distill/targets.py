"""Exact targets for set-valued answers: the Rao-Blackwellised form of the masked-diffusion cross-entropy.

The suite's `shuffle` answer is drawn uniformly from the n! - 1 orders of the prompt's (distinct) items other
than the prompt's own order. Scoring a masked slot against that one sampled order is an unbiased but noisy
estimate of scoring it against the slot's exact posterior given what the query sees, because

    E_y[-log p(y_q) | seen] = -sum_c P(y_q = c | seen) log p(c)

and the masking is independent of the answer. So the loss keeps its expectation (the same ELBO, the same 1/t
weights) while the irreducible part of its gradient noise goes: once the model matches the posterior, shuffle
rows contribute no gradient instead of a random push towards one arbitrary order, which otherwise lands on the
weights every task shares (Rao-Blackwellisation: a sampled quantity replaced by its conditional expectation,
which never increases variance; Casella & Robert, Biometrika 1996).

The posterior is closed-form. A query at slot q sees some answer slots (their clean tokens); let R be the items
on the m slots it does not see, q included. Every order that agrees with the seen slots puts each item of R at
q in (m - 1)! ways, less the one excluded order when that order still agrees with everything seen:

    P(y_q = c | seen) = ((m - 1)! - [seen agrees with the excluded order and c is its item at q])
                        / (m! - [seen agrees with the excluded order]),     c in R.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def permutation_posterior(x0: Tensor, excluded: Tensor, sees: Tensor, vocab: int) -> Tensor:
    """[B, L, V] posterior of every slot's token given the slots it sees, for rows whose answer is a uniformly
    random order, other than `excluded`, of distinct items.

    x0 [B, L] clean tokens; excluded [B, L] the excluded order's token at each permutation slot, -1 off them;
    sees [B, L, L] bool: query q sees key k's clean token (a query never sees itself, as it is masked).
    Rows and columns that are not permutation slots get all-zero distributions: callers read only the slots."""
    slot = excluded >= 0                                                    # [B, L]
    pair = slot[:, :, None] & slot[:, None, :]                              # [B, Q, K] both are slots
    seen = pair & sees
    hidden = pair & ~sees                                                   # [B, Q, K] the m slots q does not see
    m = hidden.sum(-1)                                                      # [B, Q]
    agrees = ((x0 == excluded)[:, None, :] | ~seen).all(-1) & (m > 0)       # [B, Q] excluded order still possible
    # the excluded order's item at q, once per hidden key holding it: (m - 1)! - 1 completions instead of (m - 1)!
    is_excluded = x0[:, None, :] == excluded[:, :, None]                    # [B, Q, K]
    fact = torch.lgamma(m.clamp(min=1).double()).exp()                     # [B, Q] (m - 1)!
    weight = hidden.double() * (1 - (agrees[:, :, None] & is_excluded).double() / fact[:, :, None])
    weight = weight / weight.sum(-1, keepdim=True).clamp(min=1e-300)        # [B, Q, K] normalised over hidden keys
    B, L = x0.shape
    post = torch.zeros(B, L, vocab, dtype=torch.double, device=x0.device)
    return post.scatter_add_(2, x0[:, None, :].expand(B, L, L), weight).float()


def cross_entropy(logits: Tensor, ids: Tensor, posterior: Tensor | None = None, slot: Tensor | None = None) -> Tensor:
    """[M] cross-entropy of logits [M, V] against the token ids [M], or against `posterior` [M, V] where
    `slot` [M] is set (the exact target of a permutation slot)."""
    if posterior is None or not bool(slot.any()):
        return F.cross_entropy(logits, ids, reduction="none")
    target = torch.where(slot[:, None], posterior, F.one_hot(ids, logits.shape[-1]).to(posterior.dtype))
    return F.cross_entropy(logits, target, reduction="none")
