"""The Hybrid Demucs family in our own code: offline (official) and causal streaming networks.

- :mod:`.plan`: layer geometry shared by both networks.
- :mod:`.blocks`, :mod:`.official`: the offline network (HDemucs config, exact).
- :mod:`.causal_blocks`, :mod:`.causal`: the causal-limited network (stateful layers).
- :mod:`.streaming`: :class:`StreamingHybrid`, the causal net behind the Separator protocol.
- :mod:`.windowed`: :class:`WindowedHybrid`, an offline net over a sliding window.
"""

from .causal import CausalHybridNet
from .official import HDemucsNet
from .streaming import StreamingHybrid
from .windowed import WindowedHybrid

__all__ = ["HDemucsNet", "CausalHybridNet", "StreamingHybrid", "WindowedHybrid"]
