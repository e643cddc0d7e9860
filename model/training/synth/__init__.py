"""Synthetic multitrack songs for training and evaluation: MIDI through FluidSynth, sung vocals.

``render_song(seed, seconds)`` composes a song (style, chords, structure, drums, bass, chord
parts, a sung lead with lyrics), plays it through a General MIDI sound font, sings the lead
with espeak-ng words re-pitched by the WORLD vocoder, and mixes it like a record. It returns
the stems vocals, drums, bass, other and their exact sum. ``livestems synth`` writes such songs
as MUSDB-layout folders.

With ``voices=VoicePool.build(...)`` the lead is sung instead by a singer drawn per seed from
human-recorded Festival/HTS/flite voices or real vocal stems moved in pitch and formants.

Modules: :mod:`.compose` (the plan), :mod:`.fluid` (FluidSynth), :mod:`.voice` (singing),
:mod:`.speakers` (the speech engines and their voices), :mod:`.realvocal` (real vocal stems
moved by WORLD), :mod:`.singers` (the voice pool and the lead's production), :mod:`.mix`
(EQ, compression, panning, echoes), :mod:`.render` (the pipeline).
"""

from .render import SOURCES, SynthSong, render_song

__all__ = ["SOURCES", "SynthSong", "render_song"]
