"""Separators: the protocol, the DSP baseline and the hybrid streaming nets."""
