"""Model families: `llada` and `dream` (bidirectional), `sdar` and `llada2` (block-causal), all on the one
`Transformer`."""
from __future__ import annotations

from .dream import FAMILY as DREAM
from .family import Family, SpecialIds, check_dims, check_ids
from .llada import FAMILY as LLADA
from .llada2 import FAMILY as LLADA2
from .sdar import FAMILY as SDAR
from .transformer import ArchConfig, Transformer

FAMILIES: dict[str, Family] = {f.name: f for f in (LLADA, SDAR, DREAM, LLADA2)}
ARCHITECTURES = {"LLaDAModelLM": "llada", "SDARForCausalLM": "sdar", "DreamModel": "dream",
                 "LLaDA2MoeModelLM": "llada2"}
# model_type spellings of the hub checkpoints: Dream writes "Dream"; LLaDA2 "llada2_moe"; MMaDA's text model is
# LLaDA ("mmada", `MMadaModelLM(LLaDAModelLM)` in Gen-Verse/MMaDA models/modeling_mmada.py)
MODEL_TYPES = {"dream": "dream", "llada2_moe": "llada2", "mmada": "llada"}


def detect_family(cfg: dict) -> Family:
    """The family of a config.json: `model_type` first, then `architectures`."""
    name = cfg.get("model_type")
    name = name.lower() if isinstance(name, str) else name
    name = MODEL_TYPES.get(name, name)
    if name not in FAMILIES:
        name = next((ARCHITECTURES[a] for a in cfg.get("architectures", []) if a in ARCHITECTURES), None)
    if name is None:
        raise ValueError(f"unknown model family (model_type={cfg.get('model_type')!r}, "
                         f"architectures={cfg.get('architectures')!r}); dllm supports {sorted(FAMILIES)}")
    return FAMILIES[name]


__all__ = ["ArchConfig", "Transformer", "Family", "SpecialIds", "FAMILIES", "detect_family", "check_dims",
           "check_ids"]
