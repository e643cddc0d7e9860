"""Speech engines that say the lyric words a singer then sings: espeak-ng, Festival, flite.

A :class:`SpeakerVoice` names one voice of one engine (with its language, sex, Debian package
and licence). :func:`speak` returns a word spoken by it; :mod:`.voice` analyses that with
WORLD and drives it along the melody. Engines:

- ``espeak``: espeak-ng formant synthesis (robotic, but every variant and language);
- ``festival``: Festival diphone voices, concatenated from recordings of people: American
  English (CMU kal, ked), Italian (lp, pc), Czech (dita, machac, ph, the child krb), Finnish
  (suopuhe lj, mv);
- ``hts``: Festival HTS statistical voices trained on recordings of one person: CMU ARCTIC
  slt (US English) and UPC ona (Catalan);
- ``flite``: flite's built-in voices (CMU kal16, awb, rms, slt).

Words for a non-English voice are mapped to words of its language (a fixed table: the same
English lyric always gives the same foreign word), so an Italian voice sings Italian.

Festival loads a voice in ~0.25 s, so :func:`prefetch` says all the words a song needs in
one Festival process; every word is its own utterance, so the samples of a word do not
depend on which other words were fetched with it.
"""

from __future__ import annotations

import functools
import io
import os
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = ["ENGINES", "VOICES", "SpeakerVoice", "SpeakerError", "VoiceError", "available_voices",
           "lyric_in", "prefetch", "say", "speak", "voice_by_key"]

ENGINES = ("espeak", "festival", "hts", "flite")

_ESPEAK_FIX = "apt-get install espeak-ng (Debian/Ubuntu)"


class VoiceError(RuntimeError):
    """espeak-ng or pyworld is missing or failed; the message says how to fix it."""


# --------------------------------------------------------------------------------------------
# espeak-ng

def say(text: str, voice: str = "en-us", rate_wpm: int = 120) -> tuple[np.ndarray, int]:
    """Speak ``text`` with espeak-ng: (float64 mono samples in [-1, 1], sample rate in Hz).

    Runs the ``espeak-ng`` program once per call. The library keeps state between
    utterances (its output for a word depends on what was said before), so each word gets a
    fresh process: the same word and voice always give the same samples (~15 ms a call).
    """
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise VoiceError(f"espeak-ng not found on PATH: expected the espeak-ng program. "
                         f"Fix: {_ESPEAK_FIX}")
    proc = subprocess.run([exe, "-v", voice, "-s", str(int(rate_wpm)), "-p", "50", "--stdout",
                           text], capture_output=True, stdin=subprocess.DEVNULL)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0 or "not found" in err.lower() or len(proc.stdout) <= 44:
        raise VoiceError(f"espeak-ng has no voice {voice!r} or failed ({err or proc.returncode}): "
                         f"expected e.g. 'en-us' or 'en-us+f3' (espeak-ng --voices lists them)")
    audio, sr = sf.read(io.BytesIO(proc.stdout), dtype="float64")
    return (audio if audio.ndim == 1 else audio.mean(axis=1)), int(sr)


class SpeakerError(VoiceError):
    """A speech engine or voice is missing or failed; the message says how to fix it."""


@dataclass(frozen=True)
class SpeakerVoice:
    """One voice: ``engine`` (see :data:`ENGINES`), ``name`` as the engine knows it,
    ``language`` (ISO 639-1), ``sex`` ``"m"``/``"f"`` (sets the octave it sings in; the child
    voice krb counts as ``"f"``), the Debian ``package`` that provides it, its ``licence``."""

    engine: str
    name: str
    language: str
    sex: str
    package: str
    licence: str

    @property
    def key(self) -> str:
        """``engine:name``, as written in song.json."""
        return f"{self.engine}:{self.name}"


_ESPEAK_LIC = "GPL-3+ (output unrestricted)"
_CMU_LIC = "CMU/CSTR free licence (use, modify, distribute; keep the notice)"
_HTS_SLT_LIC = "EST-2003/EST-2000 (BSD-style free licence, keep the notice)"
_FLITE_LIC = "CMU flite licence (BSD-style; a few files GPL-2)"
VOICES: tuple[SpeakerVoice, ...] = (
    *(SpeakerVoice("espeak", v, "en", "m", "espeak-ng", _ESPEAK_LIC)
      for v in ("en-us", "en-us+m3", "en-us+m7", "en+m2")),
    *(SpeakerVoice("espeak", v, "en", "f", "espeak-ng", _ESPEAK_LIC)
      for v in ("en-us+f2", "en-us+f3", "en-us+f4", "en+f3")),
    SpeakerVoice("festival", "kal_diphone", "en", "m", "festvox-kallpc16k", _CMU_LIC),
    SpeakerVoice("festival", "ked_diphone", "en", "m", "festvox-kdlpc16k", _CMU_LIC),
    SpeakerVoice("festival", "lp_diphone", "it", "f", "festvox-italp16k",
                 "GPL-2+"),
    SpeakerVoice("festival", "pc_diphone", "it", "m", "festvox-itapc16k",
                 "GPL-2+"),
    SpeakerVoice("festival", "czech_dita", "cs", "f", "festvox-czech-dita", "GPL-3+"),
    SpeakerVoice("festival", "czech_machac", "cs", "m", "festvox-czech-machac", "GPL-3+"),
    SpeakerVoice("festival", "czech_ph", "cs", "m", "festvox-czech-ph", "GPL-2+"),
    SpeakerVoice("festival", "czech_krb", "cs", "f", "festvox-czech-krb", "GPL-3+"),
    SpeakerVoice("festival", "suo_fi_lj_diphone", "fi", "f", "festvox-suopuhe-lj",
                 "LGPL-2+"),
    SpeakerVoice("festival", "hy_fi_mv_diphone", "fi", "m", "festvox-suopuhe-mv",
                 "LGPL-2+"),
    SpeakerVoice("hts", "cmu_us_slt_arctic_hts", "en", "f", "festvox-us-slt-hts", _HTS_SLT_LIC),
    SpeakerVoice("hts", "upc_ca_ona_hts", "ca", "f", "festvox-ca-ona-hts", "LGPL-2.1+"),
    *(SpeakerVoice("flite", v, "en", s, "flite", _FLITE_LIC)
      for v, s in (("kal16", "m"), ("awb", "m"), ("rms", "m"), ("slt", "f"))),
)

# Singable words of each language; an English lyric maps to one of them by a fixed hash.
_LEXICON = {
    "it": ("amore", "cuore", "notte", "sole", "luna", "vita", "mare", "cielo", "sempre",
           "ancora", "tempo", "volare", "cantare", "sogno", "stella", "bella", "mio", "domani",
           "ritorno", "lontano", "fuoco", "anima", "vento", "strada", "luce", "dolce", "piano",
           "insieme", "andare", "parole", "oh", "ah"),
    "cs": ("láska", "srdce", "noc", "den", "slunce", "měsíc", "hvězda", "domov", "život",
           "svět", "sen", "oči", "duše", "cesta", "vítr", "moře", "zima", "světlo", "tma",
           "jaro", "navždy", "tančit", "zpívat", "volám", "tebe", "nebe", "oheň", "ruce",
           "ráno", "doma", "ó", "á"),
    "fi": ("rakkaus", "sydän", "yö", "päivä", "aurinko", "kuu", "tähti", "koti", "elämä",
           "maailma", "uni", "silmät", "sielu", "tie", "tuuli", "meri", "talvi", "valo",
           "taivas", "tuli", "aina", "laulaa", "tanssi", "sinä", "minä", "kesä", "sade", "lumi",
           "vapaa", "ikuinen", "oo", "aa"),
    "ca": ("amor", "cor", "nit", "dia", "sol", "lluna", "vida", "mar", "cel", "sempre",
           "somni", "estel", "casa", "llum", "vent", "foc", "cantar", "ballar", "junts", "lluny",
           "paraula", "primavera", "bonica", "aigua", "terra", "tornar", "teu", "meu", "ara",
           "avui", "oh", "ah"),
}
# the byte encoding each Festival language module reads
_FESTIVAL_ENCODING = {"en": "latin-1", "it": "latin-1", "ca": "latin-1", "fi": "latin-1",
                      "cs": "iso8859-2"}


def lyric_in(word: str, language: str) -> str:
    """The lyric ``word`` (English) for a singer of ``language``: itself for English, else a
    fixed word of that language (the same English word always maps to the same word)."""
    if language == "en":
        return word
    lex = _LEXICON.get(language)
    if lex is None:
        raise SpeakerError(f"no lyric words for language {language!r}: expected one of "
                           f"en, {', '.join(sorted(_LEXICON))}")
    return lex[zlib.crc32(word.lower().encode()) % len(lex)]


# --------------------------------------------------------------------------------------------
# availability

def _festival_voice_dirs() -> set[str]:
    """Voice folder names Festival would find (``/usr/share/festival/voices/<lang>/<name>``)."""
    roots = [Path("/usr/share/festival/voices"), Path("/usr/local/share/festival/voices")]
    extra = os.environ.get("LIVESTEMS_FESTIVAL_VOICES")
    if extra:
        roots.insert(0, Path(extra))
    found = set()
    for root in roots:
        if root.is_dir():
            found.update(p.name for p in root.glob("*/*") if p.is_dir())
    return found


@functools.lru_cache(maxsize=None)
def _flite_voices() -> frozenset[str]:
    exe = shutil.which("flite")
    if exe is None:
        return frozenset()
    out = subprocess.run([exe, "-lv"], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL).stdout
    return frozenset(out.split(":", 1)[-1].split()) if ":" in out else frozenset()


def _missing_reason(v: SpeakerVoice) -> str | None:
    """None when ``v`` can speak here, else why not (with the package to install)."""
    if v.engine == "espeak":
        return None if shutil.which("espeak-ng") else "espeak-ng not on PATH"
    if v.engine in ("festival", "hts"):
        if shutil.which("festival") is None:
            return "festival not on PATH"
        return None if v.name in _festival_voice_dirs() else f"voice {v.name} not installed"
    if v.engine == "flite":
        if shutil.which("flite") is None:
            return "flite not on PATH"
        return None if v.name in _flite_voices() else f"flite has no voice {v.name}"
    return f"unknown engine {v.engine!r}"


def available_voices(engines: tuple[str, ...] | list[str]) -> tuple[list[SpeakerVoice], list[str]]:
    """The voices of ``engines`` that can speak on this machine, and one note per engine
    whose voices are (partly) missing, naming the Debian packages that would add them.

    Raises:
        SpeakerError: an unknown engine name, or none of the voices is available.
    """
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        raise SpeakerError(f"unknown voice engine(s) {', '.join(unknown)}: expected any of "
                           f"{', '.join(ENGINES)}")
    ok, notes = [], []
    for engine in dict.fromkeys(engines):
        voices = [v for v in VOICES if v.engine == engine]
        missing = [(v, r) for v in voices if (r := _missing_reason(v)) is not None]
        ok += [v for v in voices if all(v is not m for m, _ in missing)]
        if missing:
            program = {"espeak": "espeak-ng", "flite": "flite"}.get(engine, "festival")
            pkgs = " ".join(dict.fromkeys([program] * (shutil.which(program) is None)
                                          + [v.package for v, _ in missing]))
            names = ", ".join(v.name for v, _ in missing)
            notes.append(f"voice engine {engine}: skipping {names} ({missing[0][1]}); "
                         f"install with: apt-get install {pkgs}")
    if not ok:
        programs = [{"espeak": "espeak-ng", "flite": "flite"}.get(e, "festival") for e in engines]
        wanted = " ".join(dict.fromkeys(programs + [v.package for v in VOICES
                                                    if v.engine in engines]))
        raise SpeakerError(f"no voice of {', '.join(engines)} is installed: expected at least "
                           f"one. Fix: apt-get install {wanted} (Debian/Ubuntu), or choose "
                           f"other engines")
    return ok, notes


# --------------------------------------------------------------------------------------------
# speaking

_CACHE: dict[tuple[str, str], tuple[np.ndarray, int]] = {}


def _read_wav(data: bytes | Path) -> tuple[np.ndarray, int]:
    audio, sr = sf.read(io.BytesIO(data) if isinstance(data, bytes) else data, dtype="float64")
    return (audio if audio.ndim == 1 else audio.mean(axis=1)), int(sr)


def _festival_batch(voice: SpeakerVoice, words: list[str]) -> dict[str, tuple[np.ndarray, int]]:
    """Say each of ``words`` (already in the voice's language) as its own utterance, in one
    Festival process."""
    exe = shutil.which("festival")
    if exe is None:
        raise SpeakerError("festival not found on PATH: expected the Festival speech "
                           f"synthesiser. Fix: apt-get install festival {voice.package}")
    enc = _FESTIVAL_ENCODING.get(voice.language, "latin-1")
    out: dict[str, tuple[np.ndarray, int]] = {}
    with tempfile.TemporaryDirectory(prefix="livestems-festival-") as tmp:
        lines = [f"(voice_{voice.name})"]
        for i, w in enumerate(words):
            text = w.replace("\\", "").replace('"', "")
            lines.append(f'(set! u (Utterance Text "{text}"))(utt.synth u)'
                         f'(utt.save.wave u "{tmp}/{i}.wav" (quote riff))')
        script = Path(tmp) / "say.scm"
        script.write_bytes("\n".join(lines).encode(enc, errors="replace"))
        proc = subprocess.run([exe, "--batch", str(script)], capture_output=True,
                              stdin=subprocess.DEVNULL, timeout=120)
        err = proc.stderr.decode(errors="replace").strip()
        for i, w in enumerate(words):
            f = Path(tmp) / f"{i}.wav"
            if not f.is_file() or f.stat().st_size <= 44:
                raise SpeakerError(f"festival voice {voice.name} said nothing for {w!r} "
                                   f"(exit {proc.returncode}: {err[-300:] or 'no message'}). "
                                   f"Fix: apt-get install --reinstall {voice.package}")
            out[w] = _read_wav(f)
    return out


def _flite(voice: SpeakerVoice, word: str) -> tuple[np.ndarray, int]:
    exe = shutil.which("flite")
    if exe is None:
        raise SpeakerError("flite not found on PATH: expected the flite speech synthesiser. "
                           "Fix: apt-get install flite")
    with tempfile.TemporaryDirectory(prefix="livestems-flite-") as tmp:
        f = Path(tmp) / "w.wav"
        proc = subprocess.run([exe, "-voice", voice.name, "-t", word, "-o", str(f)],
                              capture_output=True, stdin=subprocess.DEVNULL, timeout=60)
        if proc.returncode != 0 or not f.is_file() or f.stat().st_size <= 44:
            raise SpeakerError(f"flite voice {voice.name} failed on {word!r} "
                               f"({proc.stderr.decode(errors='replace').strip()[-300:]}): "
                               f"expected one of {', '.join(sorted(_flite_voices()))}")
        return _read_wav(f)


def prefetch(voice: SpeakerVoice, words) -> None:
    """Speak every (English) lyric of ``words`` with ``voice`` now, one process for Festival,
    so later :func:`speak` calls hit the cache."""
    todo = list(dict.fromkeys(lyric_in(w, voice.language) for w in words))
    todo = [w for w in todo if (voice.key, w) not in _CACHE]
    if not todo or voice.engine not in ("festival", "hts"):
        return
    for w, res in _festival_batch(voice, todo).items():
        _CACHE[(voice.key, w)] = res


def speak(voice: SpeakerVoice, word: str) -> tuple[np.ndarray, int]:
    """``word`` (an English lyric, translated for other languages) said by ``voice``:
    (float64 mono samples, sample rate in Hz: 16000 for the diphone and flite voices, 22050
    Finnish, 32000 or 44100 Czech and slt, 22050 espeak). Cached per process."""
    text = lyric_in(word, voice.language)
    hit = _CACHE.get((voice.key, text))
    if hit is not None:
        return hit
    if voice.engine == "espeak":
        res = say(text, voice.name, 110)
    elif voice.engine in ("festival", "hts"):
        res = _festival_batch(voice, [text])[text]
    elif voice.engine == "flite":
        res = _flite(voice, text)
    else:
        raise SpeakerError(f"unknown engine {voice.engine!r}: expected one of {', '.join(ENGINES)}")
    if res[0].size == 0 or not np.any(res[0]):
        raise SpeakerError(f"{voice.key} produced silence for {text!r}")
    _CACHE[(voice.key, text)] = res
    return res


def voice_by_key(key: str) -> SpeakerVoice:
    """The :class:`SpeakerVoice` for ``engine:name``."""
    for v in VOICES:
        if v.key == key:
            return v
    raise SpeakerError(f"unknown voice {key!r}: expected one of {', '.join(v.key for v in VOICES)}")
