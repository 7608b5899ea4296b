"""The Learn2PD filter: a ~2K-parameter MLP that reads the block's confidences and predicts, per slot, whether the
current prediction is already final (Bao et al., "Learning to Parallel", arXiv 2509.25188; ims-kdks/
Learning-to-Parallel-Decoding `train.ipynb`). Shared by `dllm.samplers.learn2pd` (decoding) and `dllm.distill`
(training data and fitting), so the feature definition lives in exactly one place.

File format (`save_filter` / `load_filter`): one safetensors file holding the net's state dict, with string
metadata `format`, `feature`, `feature_version`, `block_length`, `hidden`, `activation` plus any caller keys
(`net.meta` after loading). Loading refuses a file whose feature definition differs from this code's `FEATURE`,
or whose block length differs from the one asked for.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor, nn

FORMAT = "dllm.learn2pd_filter"
FEATURE = ("top1_prob", 1)   # (name, version) of `features`; bump the version whenever its output changes
ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}
RESERVED = ("format", "feature", "feature_version", "block_length", "hidden", "activation")


def features(logits: Tensor, x_blk: Tensor, masked: Tensor) -> Tensor:
    """[B, S, V] block logits -> [B, S] float32 filter input, feature `top1_prob` v1.

    The top-1 softmax probability at EVERY block slot, already-decoded slots included (the reference computes
    the confidence before masking, so the filter sees how settled the whole block is). Computed in float64 as the
    reference does, untempered, and independent of which token a sampler draws. `x_blk` [B, S] and `masked`
    [B, S] are not read by v1; they are part of the signature so a later version may look at the canvas
    without changing its callers.
    """
    logits = logits.double()
    return torch.exp(logits.amax(-1) - torch.logsumexp(logits, dim=-1)).float()


class FilterNet(nn.Module):
    """Linear(S, h) -> act -> Linear(h, S): one logit per block slot (h = S = 32 gives 2,112 parameters)."""

    def __init__(self, block_length: int, hidden: int | None = None, activation: str = "relu"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
        self.block_length, self.hidden, self.activation = block_length, hidden or block_length, activation
        self.meta: dict[str, str] = {}   # caller metadata read back by load_filter
        self.net = nn.Sequential(nn.Linear(block_length, self.hidden), ACTIVATIONS[activation](),
                                 nn.Linear(self.hidden, block_length))

    def forward(self, feat: Tensor) -> Tensor:
        return self.net(feat)            # [B, S] -> [B, S] logits


def save_filter(path: str | Path, net: FilterNet, meta: dict | None = None) -> None:
    """Write `net` with its architecture and feature definition; `meta` adds string metadata (e.g. the teacher)."""
    meta = {k: str(v) for k, v in (meta or {}).items()}
    if clash := set(meta) & set(RESERVED):
        raise ValueError(f"metadata keys {sorted(clash)} are reserved")
    meta |= {"format": FORMAT, "feature": FEATURE[0], "feature_version": str(FEATURE[1]),
             "block_length": str(net.block_length), "hidden": str(net.hidden), "activation": net.activation}
    save_file({k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}, str(path), metadata=meta)


def shipped_file(path: str | Path) -> Path:
    """`path` when it exists, else the same relative path inside the embedded checkpoints (`dllm.loading.SHIPPED`);
    FileNotFoundError naming both when neither exists."""
    from dllm.loading import SHIPPED
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_absolute() and (SHIPPED / path).is_file():
        return SHIPPED / path
    raise FileNotFoundError(f"no filter file at {str(path)!r} (nor as a shipped file under dllm/checkpoints)")


def load_filter(path: str | Path, block_length: int | None = None) -> FilterNet:
    """Read a `save_filter` file; ValueError if it is not one, its feature definition is not this code's, or it
    was trained for another block length than `block_length` (when given).

    `path` is a file, or `<shipped model>/<file>` for a filter shipped beside an embedded checkpoint
    (e.g. "tiny-sdar/learn2pd_filter.safetensors")."""
    path = shipped_file(path)
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
        weights = {k: f.get_tensor(k) for k in f.keys()}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a Learn2PD filter file (no format={FORMAT!r} metadata)")
    feature = (meta.get("feature"), int(meta.get("feature_version", -1)))
    if feature != FEATURE:
        raise ValueError(f"filter was trained on feature {feature[0]!r} v{feature[1]}, but this code builds "
                         f"{FEATURE[0]!r} v{FEATURE[1]}; retrain the filter")
    trained = int(meta["block_length"])
    if block_length is not None and trained != block_length:
        raise ValueError(f"filter trained for block_length {trained}, decoding with {block_length}")
    net = FilterNet(trained, int(meta["hidden"]), meta["activation"])
    net.load_state_dict(weights)
    net.meta = {k: v for k, v in meta.items() if k not in RESERVED}
    return net


def train_filter(features: Tensor, labels: Tensor, *, hidden: int | None = None, activation: str = "relu",
                 lr: float = 3e-3, epochs: int = 40_000, weight_decay: float = 0.01, seed: int = 0) -> FilterNet:
    """Fit a filter on features [N, S] and 0/1 labels [N, S] (label = "the slot's prediction is final").

    As the reference notebook: full batch, AdamW at lr 3e-3, BCE-with-logits averaged over all N * S outputs
    (decoded slots included), 40,000 epochs. Deterministic given `seed` on a fixed device (no shuffling; the
    initialisation is drawn under a forked, seeded RNG so the caller's RNG is untouched).
    """
    if features.shape != labels.shape or features.dim() != 2:
        raise ValueError(f"features and labels must both be [N, S], got {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        feat, target = features.detach().float().clone(), labels.detach().float().clone()   # [N, S] normal tensors
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = FilterNet(feat.shape[1], hidden, activation)
        net.to(feat.device).train()
        opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
        loss_fn = nn.BCEWithLogitsLoss()
        for _ in range(epochs):
            opt.zero_grad(set_to_none=True)
            loss_fn(net(feat), target).backward()
            opt.step()
    return net.eval()
