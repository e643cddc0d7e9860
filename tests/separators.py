"""Small real separators for engine tests: exact, stateful, with a latency, cheap."""

import time

import numpy as np


class SplitDelay:
    """Two stems: a one-pole low-pass of the input (``low``) and the rest (``high``),
    both delayed by ``latency`` samples, so the stems sum to the delayed input exactly.

    Stateful (filter + delay line), so a wrong hop order or a dropped hop shows up."""

    sources = ("low", "high")
    channels = 2

    def __init__(self, hop=64, latency=100, sample_rate=44100, coeff=0.05):
        self.hop, self.latency_samples, self.sample_rate = hop, latency, sample_rate
        self.coeff = coeff
        self.reset()

    def reset(self):
        self._z = np.zeros(2)
        self._delay = np.zeros((2, self.latency_samples + self.hop), dtype=np.float32)

    def _lowpass(self, x, z):
        y = np.empty_like(x, dtype=np.float64)
        for t in range(x.shape[-1]):
            z = z + self.coeff * (x[..., t] - z)
            y[..., t] = z
        return y, z

    def step(self, x):
        lat, hop = self.latency_samples, self.hop
        self._delay[:, lat:] = x
        d = self._delay[:, :hop].copy()
        self._delay[:, :lat] = self._delay[:, hop:]
        low, self._z = self._lowpass(d, self._z)
        return np.stack([low, d - low]).astype(np.float32)

    def forward(self, x):
        x = np.asarray(x, dtype=np.float32)
        low, _ = self._lowpass(x, np.zeros(x.shape[:2]))
        return np.stack([low, x - low], axis=1).astype(np.float32)


class Sleepy(SplitDelay):
    """SplitDelay that stalls for ``stall_s`` every ``every`` hops (a worker missing deadlines)."""

    def __init__(self, every=50, stall_s=0.03, **kw):
        super().__init__(**kw)
        self.every, self.stall_s, self.calls = every, stall_s, 0

    def step(self, x):
        self.calls += 1
        if self.calls % self.every == 0:
            time.sleep(self.stall_s)
        return super().step(x)


class Broken(SplitDelay):
    """Raises after ``after`` hops."""

    def __init__(self, after=20, **kw):
        self.after = after
        super().__init__(**kw)

    def reset(self):
        super().reset()
        self.calls = 0  # hops since reset: the engine's warm-up hop does not count

    def step(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise RuntimeError("model fell over")
        return super().step(x)
