"""GPU path: the hop captured as a CUDA graph equals eager execution and the offline forward.
Skipped without CUDA (the dev machines and CI have none)."""

import numpy as np
import pytest
import torch

from livestems.model.nets.hybrid import StreamingHybrid
from livestems.model.nets.presets import build_preset_net
from livestems.model.nets.protocol import stream_offline

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", ["rt-tiny", "rt-base"])
def test_cuda_graph_step_equals_offline(name):
    net = build_preset_net(name)
    sep = StreamingHybrid(net, device="cuda")
    assert sep.cuda_graph_error is None and sep._graph is not None
    x = (np.random.default_rng(0).standard_normal((2, 20000)) * 0.1).astype(np.float32)
    want = sep.forward(x[None])[0]
    np.testing.assert_allclose(stream_offline(sep, x), want, atol=1e-4)
    eager = StreamingHybrid(build_preset_net(name), device="cuda", cuda_graph=False)
    np.testing.assert_allclose(stream_offline(eager, x), want, atol=1e-4)
