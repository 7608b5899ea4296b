"""Parallel-decoding samplers: each a frozen dataclass with `init_state` and `step` (see dllm.protocols)."""
from .factor import Factor
from .freedave import FreeDave
from .routing import UCB, Always, Hysteresis, Never, ScoreThreshold, SpanLength
from .s2d2 import S2D2
from .static import Static
from .threshold import Threshold

__all__ = ["Static", "Threshold", "Factor", "FreeDave", "S2D2", "Always", "Never", "SpanLength", "ScoreThreshold",
           "Hysteresis", "UCB"]
