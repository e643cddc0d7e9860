"""Audio I/O backends: file (paced), PortAudio, JACK."""
