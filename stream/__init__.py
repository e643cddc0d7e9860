"""Real-time engine: rings, the worker, I/O backends, the mixer, the CLI and apps."""
