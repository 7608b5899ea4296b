"""Parallel-decoding samplers: each a frozen dataclass with `init_state` and `step` (see dllm.protocols)."""
from .factor import Factor
from .freedave import FreeDave
from .static import Static
from .threshold import Threshold

__all__ = ["Static", "Threshold", "Factor", "FreeDave"]
