"""C ABI through cffi embedding and the native shims (JACK client, DPF plugin)."""
