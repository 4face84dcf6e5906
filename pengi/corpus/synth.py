"""One in-process FluidSynth per worker, with the three General MIDI soundfonts loaded once.

FluidSynth's own reverb and chorus are switched off: their buffers carry a tail from one clip
into the next, which would make a clip depend on what its worker rendered before. Rooms are
added afterwards with :func:`pengi.corpus.common.reverb`, seeded per clip.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

# name -> (path, Debian package, licence). TimGM6mb is the held-out soundfont for tests.
SOUNDFONTS: dict[str, tuple[str, str, str]] = {
    "FluidR3_GM": ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm", "MIT"),
    "MuseScore_General_Lite": (
        "/usr/share/sounds/sf3/MuseScore_General_Lite.sf3",
        "musescore-general-soundfont-small",
        "MIT",
    ),
    "TimGM6mb": ("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont", "GPL-2"),
}

DRUM_CHANNEL = 9
BLOCK = 64  # FluidSynth's internal block size (frames)
POLYPHONY = 96  # voices in the pool (more than a 5-s phrase here holds at once)
PRIME_KEY = 24
SYNTH_GAIN = 0.6
CALIBRATION_DB = -30.0  # RMS of an instrument reference note (velocity 100) after calibration


@dataclass
class Event:
    """A MIDI event at ``time`` seconds: ``kind`` is 'on', 'off' or 'program'."""

    time: float
    kind: str
    channel: int
    a: int  # key, or bank for 'program'
    b: int = 0  # velocity, or preset for 'program'


class Renderer:
    """A FluidSynth instance with every soundfont loaded; render events to mono float32."""

    def __init__(self, sample_rate: int):
        import fluidsynth  # loads libfluidsynth through ctypes; only workers need it

        self.sample_rate = sample_rate
        # Effects must be off when the synth is created: set afterwards, the chorus kept running,
        # and its LFO phase (global time) made every clip depend on what was rendered before.
        self.synth = fluidsynth.Synth(samplerate=float(sample_rate), gain=SYNTH_GAIN,
                                      **{"synth.reverb.active": 0, "synth.chorus.active": 0,
                                         "synth.polyphony": POLYPHONY})
        self._write_float = fluidsynth.cfunc(
            "fluid_synth_write_float", ctypes.c_int, ("synth", ctypes.c_void_p, 1), ("len", ctypes.c_int, 1),
            ("lbuf", ctypes.c_void_p, 1), ("loff", ctypes.c_int, 1), ("lincr", ctypes.c_int, 1),
            ("rbuf", ctypes.c_void_p, 1), ("roff", ctypes.c_int, 1), ("rincr", ctypes.c_int, 1))
        self._rendered = 0  # frames rendered so far (to realign to FluidSynth's blocks)
        self.sfids: dict[str, int] = {}
        for name, (path, _, _) in SOUNDFONTS.items():
            sfid = self.synth.sfload(path)
            if sfid < 0:
                raise RuntimeError(f"FluidSynth could not load soundfont {path}")
            self.sfids[name] = sfid

        self._calibration: dict[tuple[str, int, int], float] = {}

    def calibration_db(self, soundfont: str, program: int, ref_pitch: int) -> float:
        """Gain (dB) that brings this instrument's reference note to ``CALIBRATION_DB``.

        Soundfonts and their presets differ in loudness by 10 dB and more, which would bury the
        velocity -> level relation under an instrument cue (and make level a soundfont cue).
        Each (soundfont, program) is therefore calibrated once, like a recording engineer
        setting the gain per instrument: a 1-s note at ``ref_pitch`` and velocity 100 is
        brought to ``CALIBRATION_DB`` RMS; velocity then changes the level as the soundfont's
        own velocity curve says.
        """
        key = (soundfont, program, ref_pitch)
        if key not in self._calibration:
            events = [Event(0, "program", 0, 0, program), Event(0, "on", 0, ref_pitch, 100), Event(0.8, "off", 0, ref_pitch)]
            x = self.render(soundfont, events, 1.0)
            level = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) + 1e-12)
            self._calibration[key] = round(float(CALIBRATION_DB - level), 2)
        return self._calibration[key]

    def preset_name(self, soundfont: str, bank: int, program: int) -> str:
        name = self.synth.sfpreset_name(self.sfids[soundfont], bank, program)
        return (name or "").strip()

    def _samples(self, n: int) -> np.ndarray:
        """(2n,) interleaved stereo float32. pyfluidsynth's ``get_samples`` writes 16-bit
        through FluidSynth's dither, whose running state made a clip depend on what the worker
        rendered before; the float writer has no dither."""
        self._rendered += n
        buf = np.zeros(2 * n, dtype=np.float32)
        ptr = buf.ctypes.data
        self._write_float(self.synth.synth, n, ptr, 0, 2, ptr, 1, 2)
        return buf

    def reset(self) -> None:
        """Silence every channel and flush, so the next clip starts from the same state.

        FluidSynth renders in blocks of 64 frames and applies events at block starts, so the
        flush also realigns to a block boundary; otherwise the same clip would come out shifted
        by up to 63 samples depending on what the worker rendered before.
        """
        for ch in range(16):
            self.synth.cc(ch, 123, 0)  # all notes off
            self.synth.cc(ch, 120, 0)  # all sound off
        self._samples(512 + (-self._rendered - 512) % BLOCK)
        # A reused voice starts its first block from state its previous note left behind
        # (measured: the first 63 samples of a note differed with the clip rendered before).
        # Priming every voice of the pool with the same notes, then killing them, leaves the
        # pool in one state whatever came before.
        self.synth.program_select(0, self.sfids["FluidR3_GM"], 0, 0)
        for key in range(PRIME_KEY, PRIME_KEY + POLYPHONY):
            if self.synth.get_active_voice_count() >= POLYPHONY:
                break  # a note may take several voices (layers): stop when the pool is full
            self.synth.noteon(0, key, 100)
        self._samples(2 * BLOCK)
        for ch in range(16):
            self.synth.cc(ch, 120, 0)
        self._samples(4 * BLOCK)

    def render(self, soundfont: str, events: list[Event], seconds: float) -> np.ndarray:
        """Render ``events`` (any order) for ``seconds``; returns (T,) float32 mono."""
        self.reset()
        sfid = self.sfids[soundfont]
        total = int(round(seconds * self.sample_rate))
        chunks = []
        pos = 0
        for ev in sorted(events, key=lambda e: (e.time, {"program": 0, "off": 1, "on": 2}[e.kind])):
            at = min(total, int(round(ev.time * self.sample_rate)))
            if at > pos:
                chunks.append(self._samples(at - pos))
                pos = at
            if ev.kind == "program":
                self.synth.program_select(ev.channel, sfid, ev.a, ev.b)
            elif ev.kind == "on":
                self.synth.noteon(ev.channel, ev.a, ev.b)
            else:
                self.synth.noteoff(ev.channel, ev.a)
        if total > pos:
            chunks.append(self._samples(total - pos))
        stereo = np.concatenate(chunks).reshape(-1, 2)  # (T, 2) float32 interleaved
        return stereo.mean(axis=1).astype(np.float32)


_RENDERER: Renderer | None = None


def get_renderer(sample_rate: int) -> Renderer:
    """The worker's renderer, created on first use (soundfonts load once per process)."""
    global _RENDERER
    if _RENDERER is None or _RENDERER.sample_rate != sample_rate:
        _RENDERER = Renderer(sample_rate)
    return _RENDERER
