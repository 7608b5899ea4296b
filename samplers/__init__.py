"""Parallel-decoding samplers: each a frozen dataclass with `init_state` and `step` (see dllm.protocols)."""
from .credit import CreditDecoding
from .dynamic import DynamicThreshold
from .entropy import EntropyThreshold
from .eotp import EoTP
from .factor import Factor
from .freedave import FreeDave
from .learn2pd import Learn2PD
from .localleap import LocalLeap
from .policy import FilterNet, load_filter, save_filter, train_filter
from .routing import UCB, Always, Hysteresis, Never, ScoreThreshold, SpanLength
from .s2d2 import S2D2
from .static import Static
from .threshold import Threshold

__all__ = ["Static", "Threshold", "DynamicThreshold", "Factor", "EntropyThreshold", "CreditDecoding", "LocalLeap", "FreeDave", "S2D2", "Learn2PD", "EoTP", "FilterNet", "load_filter",
           "save_filter", "train_filter", "Always", "Never", "SpanLength", "ScoreThreshold",
           "Hysteresis", "UCB"]
