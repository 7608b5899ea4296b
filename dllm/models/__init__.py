"""Model families: `llada` and `dream` (bidirectional) and `sdar` (block-causal), all on the one `Transformer`."""
from __future__ import annotations

from .dream import FAMILY as DREAM
from .family import Family, SpecialIds
from .llada import FAMILY as LLADA
from .sdar import FAMILY as SDAR
from .transformer import ArchConfig, Transformer

FAMILIES: dict[str, Family] = {f.name: f for f in (LLADA, SDAR, DREAM)}
ARCHITECTURES = {"LLaDAModelLM": "llada", "SDARForCausalLM": "sdar", "DreamModel": "dream"}


def detect_family(cfg: dict) -> Family:
    """The family of a config.json: `model_type` first, then `architectures`."""
    name = cfg.get("model_type")
    name = name.lower() if isinstance(name, str) else name   # Dream writes "Dream"
    if name not in FAMILIES:
        name = next((ARCHITECTURES[a] for a in cfg.get("architectures", []) if a in ARCHITECTURES), None)
    if name is None:
        raise ValueError(f"unknown model family (model_type={cfg.get('model_type')!r}, "
                         f"architectures={cfg.get('architectures')!r}); dllm supports {sorted(FAMILIES)}")
    return FAMILIES[name]


__all__ = ["ArchConfig", "Transformer", "Family", "SpecialIds", "FAMILIES", "detect_family"]
