"""MIDI through the real path: a python-rtmidi virtual controller on the test's jackd,
connected by name to `livestems midi`'s midi_in while audio runs; the effect is measured in
the recorded mix, not read from the state."""

import numpy as np
from midirig import Rig, db, fit_gains, stems_signal, with_retries

RATE = 44100
PERIOD = 256
RAMP = 441  # the mixer's 10 ms ramp at the model's (= the server's) rate

LEVEL_MAP = """
# the acceptance mapping: fader CC 7 -> vocals, -24..0 dB, linear in dB, no soft takeover
[midi]
soft_takeover = false

[[control]]
param = "vocals.gain"
cc = 7
range = [-24, 0]
curve = "linear"
"""


def _gain_track(rec, a, b, g_acc):
    """Per-sample vocal gain g(t) = (mix - g_acc * accompaniment) / vocals on frames [a, b)
    where the vocal stem is strong enough for the division to be exact."""
    mix, v, acc = (rec[k, a:b].astype(np.float64) for k in range(3))
    ok = np.abs(v) > 0.5 * np.abs(v).max()
    idx = np.nonzero(ok)[0]
    return idx + a, (mix[idx] - g_acc * acc[idx]) / v[idx]


def test_cc_changes_vocal_level_by_the_mapped_amount_in_time_without_a_step(jackd_44k,
                                                                              tmp_path):
    """CC 7 = 64 maps to -24 + 24 * 64/127 = -11.906 dB. The recorded mix must show the vocal
    stem at that level (within 0.5 dB) no later than one period plus the ramp after the output
    frame that corresponds to the message's arrival, and the gain must move as a ramp."""
    rig = Rig(jackd_44k, tmp_path, LEVEL_MAP)
    try:
        sig = stems_signal(1.2, RATE)
        at = int(0.6 * RATE)

        def body():
            return rig.record(sig, [(-4000, (0xB0, 7, 127)), (at, (0xB0, 7, 64))])

        rec, frames = with_retries(rig, body)
        lat = rig.latency
        f = frames[1] + lat  # the output frame of the input that arrived with the message
        before = fit_gains(rec, f - 3 * PERIOD - 8192, f - 3 * PERIOD)
        done = f + PERIOD + RAMP
        after = fit_gains(rec, done, done + 8192)
        change = db(after[0]) - db(before[0])
        # when did the gain get within 0.5 dB of the new level, and how did it get there?
        t, g = _gain_track(rec, f - 3 * PERIOD, done + 2048, after[1])
        target = 10 ** (-11.906 / 20)
        inside = t[np.abs(20 * np.log10(np.maximum(g, 1e-9)) - (-11.906)) <= 0.5]
        settled = int(inside[inside >= t[np.argmax(g < 0.99)]][0]) - f
        slopes = np.abs(np.diff(g)) / np.diff(t)
        moving = t[(g < 1.0 - 0.01) & (g > target + 0.01)]
        print(f"latency {lat}; before {db(before[0]):+.3f} dB, after {db(after[0]):+.3f} dB, "
              f"change {change:+.3f} dB (mapped -11.906); within 0.5 dB {settled} samples "
              f"after the message's output frame (bound {PERIOD + RAMP}); ramp spans "
              f"{moving[-1] - moving[0] if moving.size else 0} samples; steepest "
              f"{slopes.max():.5f}/sample vs a ramp's {(1 - target) / RAMP:.5f}")
        assert abs(before[0] - 1.0) < 1e-3 and abs(after[1] - 1.0) < 1e-3
        assert abs(change - (-11.906)) < 0.5, change
        assert settled <= PERIOD + RAMP, settled
        assert slopes.max() < 1.5 * (1 - target) / RAMP, slopes.max()  # no step
        assert moving[-1] - moving[0] > 0.8 * RAMP  # a ramp, not a jump
    finally:
        st = rig.stop(check=False)
        rig.close()
    assert st["midi"]["applied"] >= 2 and st["worker_error"] is None


def _levels(rig, sig, actions, *, col=0, ports_fit=(0, 1, 2)):
    """Vocal gain (dB) in the mix in a window after each action's effect has settled (and
    before the next action), plus the accompaniment gain there. ``col`` 0: the mix port."""
    def body():
        return rig.record(sig, actions)

    rec, frames = with_retries(rig, body)
    out = []
    ends = frames[1:] + [sig.shape[1] - 2048]
    for f, nxt in zip(frames, ends):
        a = f + rig.latency + PERIOD + RAMP + 64
        b = nxt + rig.latency - 3 * PERIOD
        assert b - a > 2048, (a, b)
        sub = rec[[col, 1, 2]]
        gv, ga = fit_gains(sub, a, b)
        out.append((round(db(gv), 3), round(ga, 4)))
    return out, rec, frames


def _at(k, step_s=0.3):
    return int((k + 1) * step_s * RATE)


TAKEOVER_MAP = """
[[control]]
param = "vocals.gain"
cc = 7
range = [-24, 0]
curve = "linear"          # soft takeover is on by default

[preset.down]
program = 1
vocals.gain = -6
"""


def test_soft_takeover(jackd_44k, tmp_path):
    """The fader does nothing until it reaches the current value (within 3% of the travel) or
    passes through it; after a preset moved the value it has to pick it up again."""
    rig = Rig(jackd_44k, tmp_path, TAKEOVER_MAP)
    try:
        msgs = [(0xB0, 7, 20),    # far below 0 dB (= the top of the travel): ignored
                (0xB0, 7, 100),   # closer, still not there: ignored
                (0xB0, 7, 126),   # within 3%: takes over (-0.189 dB)
                (0xB0, 7, 64),    # in sync now: -11.906 dB
                (0xC0, 1),        # preset: -6 dB (the fader is at -11.9: out of sync again)
                (0xB0, 7, 20),    # -20.2 dB would be a jump: ignored
                (0xB0, 7, 110)]   # passed through -6 dB (the travel's 75%): -3.213 dB
        levels, _, _ = _levels(rig, stems_signal(2.6, RATE),
                               [(_at(k), m) for k, m in enumerate(msgs)])
    finally:
        st = rig.stop(check=False)
        rig.close()
    print(levels)
    want = [0.0, 0.0, -0.189, -11.906, -6.0, -6.0, -3.213]
    for (got, g_acc), w in zip(levels, want):
        assert abs(got - w) < 0.05 and abs(g_acc - 1) < 1e-3, (levels, want)
    assert st["midi"]["takeover_waits"] == 3


ENCODER_MAP = """
[[control]]
param = "vocals.gain"
cc = 10
mode = "relative"         # two's complement: 1..63 up, 127..65 down
steps = 24                # 24 ticks for the travel: 1 dB a tick on -24..0
range = [-24, 0]
curve = "linear"

[[control]]
param = "accompaniment.gain"
cc = 11
mode = "relative"
encoding = "offset"       # 64 + n up, 64 - n down
steps = 12
range = [-12, 0]
curve = "linear"
"""


def test_relative_encoders(jackd_44k, tmp_path):
    rig = Rig(jackd_44k, tmp_path, ENCODER_MAP)
    try:
        msgs = [(0xB0, 10, 127), (0xB0, 10, 125),   # -1, then -3: -4 dB
                (0xB0, 10, 2),                        # +2: -2 dB
                (0xB0, 10, 1),                        # +1: -1 dB
                (0xB0, 11, 61)]                       # accompaniment -3 ticks: -3 dB
        levels, _, _ = _levels(rig, stems_signal(1.9, RATE),
                               [(_at(k), m) for k, m in enumerate(msgs)])
    finally:
        rig.stop(check=False)
        rig.close()
    print(levels)
    want = [(-1.0, 1.0), (-4.0, 1.0), (-2.0, 1.0), (-1.0, 1.0), (-1.0, 10 ** (-3 / 20))]
    for (got, g_acc), (w, wa) in zip(levels, want):
        assert abs(got - w) < 0.05 and abs(g_acc - wa) < 2e-3, (levels, want)


CC14_MAP = """
[midi]
soft_takeover = false

[[control]]
param = "vocals.gain"
cc = 1
cc14 = true              # MSB CC 1, LSB CC 33
range = [-60, 12]
curve = "linear"
"""


def test_14_bit_cc(jackd_44k, tmp_path):
    """MSB 100 + LSB 127 = 12927 / 16383 of the travel: -3.188 dB; 7-bit alone would give
    -3.746 dB. An MSB alone resets the LSB (MIDI spec): MSB 100 -> -3.746 dB."""
    rig = Rig(jackd_44k, tmp_path, CC14_MAP)
    try:
        msgs = [(0xB0, 1, 100), (0xB0, 33, 127), (0xB0, 1, 100), (0xB0, 33, 64)]
        levels, _, _ = _levels(rig, stems_signal(1.6, RATE),
                               [(_at(k), m) for k, m in enumerate(msgs)])
    finally:
        rig.stop(check=False)
        rig.close()
    print(levels)
    want = [-60 + 72 * 12800 / 16383, -60 + 72 * 12927 / 16383, -60 + 72 * 12800 / 16383,
            -60 + 72 * 12864 / 16383]
    for (got, _), w in zip(levels, want):
        assert abs(got - w) < 0.02, (levels, want)


def test_program_change_recalls_presets_of_the_shipped_mapping(jackd_44k, tmp_path):
    """The default mapping: program 2 'guide-vocal' (vocals -12 dB in the mix, guide vocal
    -12 dB in the karaoke output), program 1 'karaoke' (vocals muted), program 9 (no preset:
    nothing changes), the mute button (CC 48) toggling, program 0 'full-mix'."""
    rig = Rig(jackd_44k, tmp_path, None)
    try:
        msgs = [(0xC0, 2), (0xC0, 1), (0xC5, 9), (0xB0, 48, 127), (0xB0, 48, 0), (0xC0, 0)]
        sig = stems_signal(2.3, RATE)
        levels, rec, frames = _levels(rig, sig, [(_at(k), m) for k, m in enumerate(msgs)])
        # the karaoke port after program 2: accompaniment + the guide vocal at -12 dB
        a = frames[0] + rig.latency + 2 * PERIOD + RAMP
        guide = fit_gains(rec[[3, 1, 2]], a, frames[1] + rig.latency - 3 * PERIOD)
    finally:
        st = rig.stop(check=False)
        rig.close()
    print(levels, guide)
    mix_db = [x[0] for x in levels]
    assert abs(mix_db[0] + 12) < 0.05
    assert mix_db[1] < -100 and mix_db[2] < -100  # muted; program 9 changed nothing
    assert abs(mix_db[3] + 12) < 0.05  # mute button: unmuted again at the preset's -12 dB
    assert mix_db[4] < -100 or abs(mix_db[4] + 12) < 0.05  # release: toggle ignores it
    assert abs(mix_db[5]) < 0.05  # full mix
    assert abs(db(guide[0]) + 12) < 0.05 and abs(guide[1] - 1) < 1e-3
    assert "program change 9: no preset" in rig.stderr
    assert st["midi"]["presets"] == 3


def test_learn_binds_the_next_control_and_writes_it_back(jackd_44k, tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text("# my mapping: keep this comment\n[[control]]\nparam = \"vocals.mute\"\n"
                    "note = 60   # pad 1\n")
    rig = Rig(jackd_44k, tmp_path, path, "--learn", "vocals.gain")
    try:
        msgs = [(0xB0, 21, 40),   # learned (not applied)
                (0xB0, 21, 90),   # 0 dB sits at 70.8% of the travel: picked up (+0.02 dB)
                (0xB0, 21, 64),   # +6 + 40 log10(64/127) = -5.91 dB
                (0x90, 60, 100)]  # the user's own entry still works: mute
        levels, _, _ = _levels(rig, stems_signal(1.6, RATE),
                               [(_at(k), m) for k, m in enumerate(msgs)])
    finally:
        rig.stop(check=False)
        rig.close()
    print(levels, rig.stderr)
    got = [x[0] for x in levels]
    assert abs(got[0]) < 0.05 and abs(got[1] - 0.018) < 0.05 and abs(got[2] + 5.906) < 0.05
    assert got[3] < -100
    text = path.read_text()
    assert text.startswith("# my mapping: keep this comment\n") and "note = 60   # pad 1" in text
    assert 'param = "vocals.gain"\ncc = 21\nchannel = 1\nrange = [-120.0, 6.0]' in text
    assert "learned vocals.gain <- CC 21 on channel 1" in rig.stderr
