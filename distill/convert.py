"""Convert an autoregressive checkpoint into a diffusion model: block diffusion (`sdar`) or masked diffusion (`llada`).

    dllm-distill pipeline=convert model=tiny_sdar pipeline.init=outputs/ar/tiny-sdar/model    # block diffusion
    dllm-distill pipeline=convert model=tiny_llada pipeline.init=outputs/ar/tiny-sdar/model   # masked diffusion
    dllm-distill pipeline=convert model=tiny_sdar pipeline.init=... resume=true

`pipeline.init` is a Qwen3-layout causal LM (what `dllm.distill.ar` exports); the target family is the model
config's (`model.init.family`), the dimensions are the AR checkpoint's. Every weight carries over unchanged: `sdar` has Qwen3's layout and
names, and `llada` keeps the per-head q/k norm through its optional `qk_norm` key (`dllm.models.llada`). Then
training continues through `pretrain.train` (resume, wandb, data parallelism, progress) with the target's loss:

* `sdar`: the BD3-LM objective at a block size drawn per batch from `pipeline.block_sizes` (`DrawnBlockSize`;
  with 1 in the set, the autoregressive pattern S2D2 verifies with stays in distribution); the exported
  config's `block_size` is `pipeline.block_size`, the decode default. SDAR converts Qwen3 the same way with one
  block size, 4 (JetAstra/SDAR README).
* `llada`: the masked-diffusion objective, bidirectional attention (A2D's `mdlm` conversion of Qwen3 in
  ZHZisZZ/dllm `examples/a2d`, LLaDA arXiv 2502.09992 eq. 5); with `pipeline.mask_block` one active block per
  row instead of the whole answer (`BlockwiseMasking`, the pattern semi-autoregressive decoding shows); with
  `pipeline.causal_share` (needs the logit shift) that share of the batches trains the AR start's own causal
  loss instead, so the conversion does not forget how to compute (`CausalBatches`).

The logit shift. The AR base predicts token i + 1 at position i. Dream and Fast-dLLM v2 keep that shift after
converting Qwen2.5 and undo it in their samplers (`cat(logits[:, :1], logits[:, :-1])`; DreamLM/Dream#31,
NVlabs/Fast-dLLM `v2/generation_functions.py`); SDAR (JetAstra/SDAR `generate.py` and its training loss) and
A2D (`right_shift_logits=False`) drop it: logits[i] predicts token i. `sdar` follows SDAR: unshifted, so the
model learns to predict the masked token at its own position (the block caches never feed the position before
a block, `dllm.runner`). `llada` takes either: `pipeline.logit_shift=true` writes the `logit_shift` key
(`dllm.models.llada`), token i is predicted from the hidden state at i - 1 as in Dream, and the AR base's
next-token features keep their place; without it the query that reads the context moves from i - 1 to the
mask at i, which bidirectional attention has to relearn on top of everything else.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import Tensor

from dllm.distill.objectives import BlockwiseMasking, CausalBatches, DrawnBlockSize, masked_diffusion_loss
from dllm.distill.pretrain import (Decoding, ModelInit, TrainSettings, data, evaluate_and_export, make_optimizer,
                                   restore, train, train_batches)
from dllm.distill.tokenizer import EOS_ID, MASK_ID, PAD_ID, TOKENIZERS
from dllm.eval.distributed import Dist
from dllm.eval.tracking import Tracker
from dllm.loading import read_config, weight_files
from dllm.model import DiffusionLM
from dllm.models.sdar import FAMILY as SDAR
from dllm.saving import family_config, new_model

TARGETS = ("sdar", "llada")


def read_ar(folder: str | Path) -> tuple[dict, dict[str, Tensor]]:
    """(Qwen3 config.json, state dict under our parameter names) of an AR checkpoint; ValueError if not one."""
    folder = Path(folder)
    cfg = read_config(folder)
    if cfg.get("model_type") != "qwen3":
        raise ValueError(f"pipeline.init={str(folder)!r} is not an autoregressive Qwen3-layout checkpoint "
                         f"(model_type={cfg.get('model_type')!r}); `dllm-distill pipeline=ar` writes one")
    arch = SDAR.arch({**cfg, "block_size": 1})           # Qwen3 keys are SDAR's: same checks, same shapes
    names, files = SDAR.weight_names(arch), weight_files(folder)
    missing = sorted(set(names.values()) - set(files))
    if missing:
        raise ValueError(f"{folder}: weights missing for the config: {missing[:8]}")
    state = {}
    for mine, theirs in names.items():
        with safe_open(files[theirs], framework="pt") as f:
            state[mine] = f.get_tensor(theirs)
    return cfg, state


def target_init(ar: dict, target: str, block_size: int | None) -> ModelInit:
    """The target's architecture: the AR model's, with the target family's attention."""
    if target not in TARGETS:
        raise ValueError(f"the conversion target (model.init.family) must be one of {TARGETS}, got {target!r}")
    heads = ar["num_attention_heads"]
    if ar.get("head_dim", ar["hidden_size"] // heads) * heads != ar["hidden_size"]:
        raise ValueError(f"head_dim {ar['head_dim']} x {heads} heads != hidden_size {ar['hidden_size']}: the "
                         "llada and sdar configs here derive head_dim from the width")
    if target == "sdar" and (block_size is None or block_size < 1):
        raise ValueError(f"pipeline.block_size (the sdar decode block) must be >= 1, got {block_size}")
    return ModelInit(target, ar["hidden_size"], ar["num_hidden_layers"], heads,
                     ar.get("num_key_value_heads") or heads, ar["intermediate_size"],
                     bool(ar.get("tie_word_embeddings", False)), block_size if target == "sdar" else None,
                     float(ar.get("rope_theta", 1e6)))


def converted(folder: str | Path, target: str, block_size: int | None, device: torch.device,
              tokenizer: str = "words", logit_shift: bool = False) -> tuple[DiffusionLM, dict, ModelInit]:
    """(model, config.json, architecture) of the target family holding the AR checkpoint's weights unchanged;
    `logit_shift` (llada) keeps the AR's next-token alignment (the config's `logit_shift` key)."""
    ar, state = read_ar(folder)
    vocab = TOKENIZERS[tokenizer]().get_vocab_size()
    if ar["vocab_size"] != vocab:
        raise ValueError(f"pipeline.init has vocab_size {ar['vocab_size']}, the training tokenizer "
                         f"(pipeline.tokenizer={tokenizer}) {vocab}: convert an AR model trained on this tokenizer "
                         "(`dllm-distill pipeline=ar` with the same pipeline.tokenizer)")
    arch = target_init(ar, target, block_size)
    config = family_config(target, vocab=vocab, d_model=arch.d_model, n_layers=arch.n_layers, n_heads=arch.n_heads,
                           n_kv_heads=arch.n_kv_heads, d_ff=arch.d_ff, tie=arch.tie, block_size=arch.block_size,
                           mask_id=MASK_ID, eos_id=EOS_ID, pad_id=PAD_ID, qk_norm=True,
                           logit_shift=logit_shift)
    config["rope_theta"], config["rms_norm_eps"] = arch.rope_theta, ar.get("rms_norm_eps", 1e-6)
    model = new_model(config)
    model.load_state_dict(state, strict=True)
    return model.to(device), config, arch


def convert(init: str | Path, target: str, block_sizes: list[int], block_size: int | None, s: TrainSettings,
            dec: Decoding, *, seed: int, run_dir: str | Path, export_dir: str | Path, resume: bool,
            tracker: Tracker, device: torch.device, command: str, on_step: Callable[[int], None] | None = None,
            dist: Dist | None = None, mask_block: int | None = None, logit_shift: bool = False,
            causal_share: float | None = None) -> Path:
    """The whole recipe: the AR checkpoint `init`'s weights into the target family, (resume,) train, evaluate,
    export with a model card."""
    if target == "sdar" and mask_block is not None:
        raise ValueError(f"pipeline.mask_block={mask_block} is the llada conversion's active block; block "
                         "diffusion (sdar) masks every block already (set it to null)")
    if target == "sdar" and logit_shift:
        raise ValueError("pipeline.logit_shift=true is the llada conversion's (Dream's) alignment; the block "
                         "caches of block diffusion do not feed the position before a block (set it to false)")
    if causal_share and target == "sdar":
        raise ValueError(f"pipeline.causal_share={causal_share} mixes causal batches into the llada conversion; "
                         "block diffusion gets the causal pattern from block size 1 in pipeline.block_sizes")
    if causal_share and not logit_shift:
        raise ValueError(f"pipeline.causal_share={causal_share} needs pipeline.logit_shift=true: next-token "
                         "targets train token i at position i - 1, the unshifted model predicts it at i")
    run_dir, init = Path(run_dir), Path(init).expanduser()
    model, config, arch = converted(init, target, block_size, device, dec.tokenizer, logit_shift)
    if target == "sdar":
        objective = DrawnBlockSize(tuple(block_sizes))
        if dec.block_length % block_size:
            raise ValueError(f"model.block_length={dec.block_length} must be a multiple of pipeline.block_size="
                             f"{block_size} (the decode block of the converted model)")
        batches = train_batches(s, dec, seed, left_pad=False, multiple_of=math.lcm(*block_sizes, block_size))
    else:   # the family's whole-answer masked diffusion, or one active block per row
        objective = None if mask_block is None else BlockwiseMasking(mask_block)
        if causal_share:
            objective = CausalBatches(objective or masked_diffusion_loss, causal_share)
        batches = train_batches(s, dec, seed, left_pad=True, multiple_of=1)
    opt, sched = make_optimizer(model, s)
    state = restore(run_dir, model, opt, sched, s.steps) if resume else {"step": 0, "history": [], "train_seconds": 0.0}
    state = train(model, opt, sched, batches, s, dec, run_dir, tracker, state, seed, on_step, dist,
                  objective=objective)
    how = (f"the BD3-LM objective at a block size drawn per batch from {list(block_sizes)} (decode default "
           f"{block_size})" if target == "sdar" else "the masked-diffusion objective, bidirectional attention"
           + ("" if mask_block is None else f", one active block of {mask_block} answer slots per row (clean "
              "before it, masked after it: Blockwise SFT)")
           + ("" if not causal_share else f", and the causal next-token loss on a {causal_share:g} share of "
              "the batches"))
    alignment = ("shifted (token i predicted at position i - 1, the AR base's alignment kept, as Dream)"
                 if logit_shift else "unshifted (logits[i] predicts token i, as SDAR)")
    about = f"""converted by `dllm.distill.convert` from the
autoregressive Qwen3-layout checkpoint `{init}` (`dllm.distill.ar`): every weight carried over,
then training continued with {how}, {alignment}. Data: {data(s, dec)}.
Load it with `dllm.load(<this folder>)`."""
    return evaluate_and_export(model, config, arch, s, dec, state, [t.name for t in batches.tasks], export_dir,
                               tracker, command, seed, device, dist, about, ar_section(init))


def ar_section(folder: Path) -> str:
    """The AR start's own card (command, time, greedy accuracy) as the last section of the converted model's card,
    headings one level down, so the card holds the whole recipe; empty when the AR folder has no card."""
    card = folder / "README.md"
    if not card.is_file():
        return ""
    text = card.read_text()
    body = text.split("---", 2)[2] if text.startswith("---") else text
    lines = [("#" + line if line.startswith("#") else line) for line in body.strip().splitlines()]
    rest = "\n".join(lines[1:] if lines and lines[0].startswith("## ") else lines).strip()
    return "\n## The autoregressive start (pipeline=ar)\n\nIts own card, as `dllm.distill.ar` wrote it:\n\n" + rest + "\n"
