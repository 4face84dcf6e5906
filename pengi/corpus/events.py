"""Sound events: 13 procedural classes (numpy), 9 classes of real recordings from ufoai-sound,
and 7 background beds (SOURCES.md sections 4 and 5).

Each generator returns an :class:`Event` whose ``params`` are honest labels (a beep's pitch bin
and count, a siren's type, ...) and whose ``count`` is set only when the class is countable and
the generator guarantees inter-onset intervals of at least 150 ms (SOURCES.md 5.4 rule 1).

Held-out factors: procedural classes draw their continuous parameters from the top 30% of each
range for test clips and from the bottom 70% otherwise; real classes keep about a quarter of
their source files (at least one) for test only.
"""

from __future__ import annotations

import functools
import io
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from pengi.corpus.common import bandpass, choice, fade, highpass, lowpass, resample

UFOAI_PK3 = "/usr/share/games/ufoai/base/0snd.pk3"
UFOAI_COPYRIGHT = "/usr/share/doc/ufoai-sound/copyright"
UFOAI_PACKAGE = "ufoai-sound"


@dataclass
class Event:
    """One generated event: audio plus honest descriptors."""

    label: str
    audio: np.ndarray
    params: dict = field(default_factory=dict)
    count: int | None = None  # occurrences, only when countable and honest
    source: dict | None = None  # real recording provenance


def span(rng: np.random.Generator, lo: float, hi: float, heldout: bool) -> float:
    """A value in [lo, hi]: bottom 70% for train/val, top 30% for held-out (test) clips."""
    cut = lo + 0.7 * (hi - lo)
    return float(rng.uniform(cut, hi) if heldout else rng.uniform(lo, cut))


def _t(n: int, sr: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) / sr


def _tone(freq: float, dur: float, sr: int, wave: str = "sine") -> np.ndarray:
    ph = 2 * np.pi * freq * _t(int(dur * sr), sr)
    x = np.sin(ph) if wave == "sine" else np.sign(np.sin(ph)) * 0.6
    return fade(x.astype(np.float32), sr, 0.005, 0.01)


def _place(parts: list[tuple[float, np.ndarray]], sr: int) -> np.ndarray:
    end = max(int(t * sr) + len(x) for t, x in parts)
    out = np.zeros(end, dtype=np.float32)
    for t, x in parts:
        i = int(t * sr)
        out[i : i + len(x)] += x
    return out


def _decay_noise(dur: float, tau: float, sr: int, rng) -> np.ndarray:
    n = int(dur * sr)
    return (rng.standard_normal(n) * np.exp(-_t(n, sr) / tau)).astype(np.float32)


# ---------------------------------------------------------------- procedural classes


def beep(rng, sr, heldout):
    bins = {"low": (250, 450), "medium": (700, 1200), "high": (2000, 3500)}
    pitch = choice(rng, list(bins))
    f = span(rng, *bins[pitch], heldout)
    count, wave = int(rng.integers(1, 6)), choice(rng, ["sine", "square"])
    dur, gap = float(rng.uniform(0.1, 0.3)), float(rng.uniform(0.15, 0.4))
    x = _place([(k * (dur + gap), _tone(f, dur, sr, wave)) for k in range(count)], sr)
    return Event("beep", x, {"pitch": pitch, "freq_hz": round(f, 1), "wave": wave}, count)


def siren(rng, sr, heldout):
    kind = choice(rng, ["wail", "yelp"])
    rate = span(rng, 0.2, 0.4, heldout) if kind == "wail" else span(rng, 3, 6, heldout)
    centre, depth, dur = float(rng.uniform(700, 1100)), float(rng.uniform(300, 500)), float(rng.uniform(2.5, 4.5))
    t = _t(int(dur * sr), sr)
    phase = 2 * np.pi * centre * t - depth / rate * np.cos(2 * np.pi * rate * t)
    x = np.tanh(2.0 * np.sin(phase)).astype(np.float32)
    return Event("siren", fade(x, sr, 0.05, 0.1), {"type": kind, "fm_rate_hz": round(rate, 3), "centre_hz": round(centre)})


def tone_sweep(rng, sr, heldout):
    direction = choice(rng, ["rising", "falling"])
    lo, hi = span(rng, 200, 600, heldout), span(rng, 2000, 5000, heldout)
    dur = float(rng.uniform(0.8, 2.0))
    f0, f1 = (lo, hi) if direction == "rising" else (hi, lo)
    t = _t(int(dur * sr), sr)
    k = np.log(f1 / f0) / dur
    phase = 2 * np.pi * f0 * (np.exp(k * t) - 1) / k
    return Event("tone_sweep", fade(np.sin(phase).astype(np.float32), sr, 0.02, 0.05),
                 {"direction": direction, "start_hz": round(f0), "end_hz": round(f1)})


def birdsong(rng, sr, heldout):
    count = int(rng.integers(3, 9))
    parts, t0 = [], 0.0
    for _ in range(count):
        d = float(rng.uniform(0.04, 0.12))
        f_hi = span(rng, 4000, 6000, heldout)
        tt = _t(int(d * sr), sr)
        f = f_hi - (f_hi - 3000) * tt / d
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(len(tt))
        parts.append((t0, x.astype(np.float32)))
        t0 += d + float(rng.uniform(0.15, 0.3))
    return Event("birdsong", _place(parts, sr), {"chirps": count}, None)  # fast chirps: not counted


def clock_ticking(rng, sr, heldout):
    speed = choice(rng, ["slow", "moderate", "fast"])
    rate = {"slow": 1.0, "moderate": 2.0, "fast": 4.0}[speed] * float(rng.uniform(0.95, 1.05))
    f = span(rng, 1500, 3000, heldout)
    tick = (_decay_noise(0.01, 0.002, sr, rng) + 0.5 * _tone(f, 0.01, sr)).astype(np.float32)
    tock = (_decay_noise(0.01, 0.002, sr, rng) + 0.5 * _tone(f * 0.75, 0.01, sr)).astype(np.float32)
    x = _place([(k / rate, tick if k % 2 == 0 else tock) for k in range(int(6 * rate))], sr)
    return Event("clock_ticking", bandpass(x, sr, 800, 6000), {"speed": speed, "rate_hz": round(rate, 3)})


def knocking(rng, sr, heldout):
    count = int(rng.integers(2, 6))
    f = span(rng, 120, 250, heldout)
    gap = float(rng.uniform(0.18, 0.35))
    body = _tone(f, 0.08, sr) * np.exp(-_t(int(0.08 * sr), sr) / 0.02)
    knock = lowpass(_decay_noise(0.08, 0.015, sr, rng), sr, 800) * 3 + body
    x = _place([(k * gap, knock.astype(np.float32)) for k in range(count)], sr)
    return Event("knocking", x, {"freq_hz": round(f, 1)}, count)


def telephone_ringing(rng, sr, heldout):
    style = choice(rng, ["US", "UK"])
    f1, f2 = (440, 480) if style == "US" else (400, 450)

    def ring(d: float) -> np.ndarray:  # two tones, 20 Hz ringer modulation
        gate = 0.6 + 0.4 * np.sign(np.sin(2 * np.pi * 20 * _t(int(d * sr), sr)))
        return ((_tone(f1, d, sr) + _tone(f2, d, sr)) * gate).astype(np.float32)

    parts = [(0.0, ring(2.0))] if style == "US" else [(0.0, ring(0.4)), (0.6, ring(0.4)), (3.0, ring(0.4)), (3.6, ring(0.4))]
    return Event("telephone_ringing", _place(parts, sr), {"style": style})


def smoke_alarm(rng, sr, heldout):
    f = span(rng, 2800, 3400, heldout)
    parts = [(k * 1.0 + 4.0 * r, _tone(f, 0.5, sr, "square")) for r in range(2) for k in range(3)]
    return Event("smoke_alarm", _place(parts, sr), {"freq_hz": round(f)}, None)


def bell(rng, sr, heldout):
    height = choice(rng, ["low", "high"])
    f = span(rng, 200, 350, heldout) if height == "low" else span(rng, 700, 1200, heldout)
    count = int(rng.integers(1, 5))
    dur, gap = 1.5, float(rng.uniform(0.6, 1.0))
    t = _t(int(dur * sr), sr)
    strike = sum(a * np.sin(2 * np.pi * f * r * t) * np.exp(-t * (2 + 1.5 * r)) for r, a in
                 ((1, 0.5), (2.76, 0.3), (5.40, 0.15), (8.93, 0.08)))
    x = _place([(k * gap, fade(strike.astype(np.float32), sr, 0.001, 0.05)) for k in range(count)], sr)
    return Event("bell", x, {"height": height, "freq_hz": round(f, 1)}, count)


def engine(rng, sr, heldout):
    state = choice(rng, ["idling", "revving"])
    f0 = span(rng, 25, 50, heldout)
    dur = float(rng.uniform(3.0, 4.5))
    t = _t(int(dur * sr), sr)
    f = f0 * (1 + 2.0 * np.clip((t - 0.8) / 1.5, 0, 1)) if state == "revving" else f0 * np.ones_like(t)
    ph = 2 * np.pi * np.cumsum(f) / sr
    rumble = lowpass(rng.standard_normal(len(t)).astype(np.float32), sr, 500)
    x = sum(np.sin(h * ph) / h for h in range(1, 12)) + 0.3 * rumble
    return Event("engine", fade(x.astype(np.float32), sr, 0.2, 0.3), {"state": state, "firing_hz": round(f0, 1)})


def heartbeat(rng, sr, heldout):
    speed = choice(rng, ["slow", "normal", "fast"])
    bpm = span(rng, *{"slow": (50, 65), "normal": (70, 90), "fast": (110, 130)}[speed], heldout)
    period = 60.0 / bpm
    thump = lambda f: (_tone(f, 0.12, sr) * np.exp(-_t(int(0.12 * sr), sr) / 0.03)).astype(np.float32)  # noqa: E731
    parts = []
    for k in range(int(4.5 / period)):
        parts += [(k * period, thump(55)), (k * period + 0.28 * period, 0.7 * thump(70))]
    return Event("heartbeat", lowpass(_place(parts, sr), sr, 300), {"speed": speed, "bpm": round(bpm, 1)})


def water_dripping(rng, sr, heldout):
    count = int(rng.integers(3, 8))
    parts, t0 = [], 0.0
    for _ in range(count):
        f = span(rng, 900, 2500, heldout)
        tt = _t(int(0.05 * sr), sr)
        x = np.sin(2 * np.pi * np.cumsum(f * (1 + 2 * tt / 0.05)) / sr) * np.exp(-tt / 0.012)
        parts.append((t0, x.astype(np.float32)))
        t0 += float(rng.uniform(0.25, 0.6))
    return Event("water_dripping", _place(parts, sr), {}, count)


def clapping(rng, sr, heldout):
    count = int(rng.integers(2, 7))
    gap = float(rng.uniform(0.25, 0.5))
    lo = span(rng, 800, 1500, heldout)
    parts = [(k * gap, bandpass(_decay_noise(0.05, 0.008, sr, rng), sr, lo, lo * 2.5) * 3) for k in range(count)]
    return Event("clapping", _place(parts, sr), {}, count)


PROCEDURAL = {f.__name__: f for f in (beep, siren, tone_sweep, birdsong, clock_ticking, knocking, telephone_ringing,
                                      smoke_alarm, bell, engine, heartbeat, water_dripping, clapping)}

# ---------------------------------------------------------------- real recordings (ufoai-sound)

REAL_PATTERNS = {
    "footsteps": r"sound/footsteps/(carpet|dirt|grass|gravel|metal|sand|snow|stone|tile|wood)\d?\.ogg",
    "glass_breaking": r"sound/misc/breakglass\d+\.ogg",
    "wood_breaking": r"sound/misc/breakwood\d+\.ogg",
    "door": r"sound/doors/(door\d-(open|close)|open_close)\.ogg",
    "fire_crackling": r"sound/ambience/(fire\d*|firesoft|smallfire)\.ogg",
    "thunder": r"sound/ambience/thunder\d\.ogg",
    "gunshot": r"sound/weapons/bullet-(pistol|pistol2|rifle|rifle-1x|sniper|shotgun|shotgunmini|smg-1x|smg|bolter"
    r"|heavybolter|rifle-3x|smg-5x|hmg-5x)\.ogg",
    "explosion": r"sound/(weapons/explosion(-grenade|-rocket|-fire)?|geoscape/combat-explosion)\.ogg",
    "pained_cry": r"sound/(soldiers/(male|female)(hurt|death)\d+|civilians/civfemscream\d+a)\.ogg",
}
REAL_CLASSES = list(REAL_PATTERNS)


def parse_debian_copyright(text: str) -> list[tuple[list[str], str]]:
    """(file globs, licence) stanzas of a machine-readable debian/copyright, in file order."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        m_files = re.search(r"^Files:(.*?)(?=^\S|\Z)", block, re.S | re.M)
        m_lic = re.search(r"^License:\s*(\S+)", block, re.M)
        if m_files and m_lic:
            stanzas.append((m_files.group(1).split(), m_lic.group(1)))
    return stanzas


@functools.lru_cache(maxsize=1)
def _ufoai_licences() -> dict[str, str]:
    """pk3 member name -> licence; the last matching stanza wins (Debian's rule), ``*`` first."""
    text = Path(UFOAI_COPYRIGHT).read_text(encoding="utf-8") if Path(UFOAI_COPYRIGHT).exists() else ""
    out: dict[str, str] = {}
    for files, lic in parse_debian_copyright(text):
        for f in files:
            if f == "*":
                out["*"] = lic
            elif f.startswith("base/"):
                out[f[len("base/") :]] = lic
    return out


def ufoai_licence(member: str) -> str:
    lic = _ufoai_licences()
    return lic.get(member, lic.get("*", "GPL-2+"))


@functools.lru_cache(maxsize=1)
def real_files() -> dict[str, list[str]]:
    """Class -> sorted pk3 member names (raises if ufoai-sound is not installed)."""
    if not Path(UFOAI_PK3).exists():
        raise FileNotFoundError(f"{UFOAI_PK3} not found: install the Debian package {UFOAI_PACKAGE}")
    with zipfile.ZipFile(UFOAI_PK3) as z:
        names = sorted(n for n in z.namelist() if n.endswith(".ogg"))
    return {c: [n for n in names if re.fullmatch(p, n)] for c, p in REAL_PATTERNS.items()}


def split_real_files(cls: str) -> dict[str, list[str]]:
    """Held-out source files per class: every 4th file (at least one) is test-only."""
    files = real_files()[cls]
    test = files[3::4] if len(files) >= 4 else files[-1:]
    return {"test": test, "train": [f for f in files if f not in test]}


_DECODED: dict[tuple[str, int], np.ndarray] = {}


def load_real(member: str, sr: int) -> np.ndarray:
    """Decode one pk3 member to mono float32 at ``sr`` (cached per worker)."""
    key = (member, sr)
    if key not in _DECODED:
        with zipfile.ZipFile(UFOAI_PK3) as z:
            data = z.read(member)
        x, file_sr = sf.read(io.BytesIO(data), dtype="float32")
        if x.ndim > 1:
            x = x.mean(axis=1)
        _DECODED[key] = resample(x, file_sr, sr)
    return _DECODED[key]


def real_event(cls: str, rng, sr: int, heldout: bool, member: str | None = None) -> Event:
    """A crop (or a walking sequence, for footsteps) of a real recording, +-5% speed."""
    pool = split_real_files(cls)["test" if heldout else "train"]
    member = member or choice(rng, pool)
    src = {"package": UFOAI_PACKAGE, "file": f"{UFOAI_PK3}:{member}", "license": ufoai_licence(member), "kind": "recording"}
    speed = float(rng.uniform(0.95, 1.05))
    x = load_real(member, sr)
    if speed != 1.0:
        x = resample(x, int(round(sr * speed)), sr)
    params = {"source_file": member, "speed": round(speed, 4)}
    count = None
    if cls == "footsteps":
        steps = int(rng.integers(3, 8))
        gap = float(rng.uniform(0.4, 0.6))
        step = x[: int(0.35 * sr)]
        x = _place([(k * gap, fade(step, sr, 0.001, 0.05)) for k in range(steps)], sr)
        params["surface"] = re.search(r"footsteps/([a-z]+)", member).group(1)
        count = steps
    else:
        max_len = int(float(rng.uniform(2.0, 4.0)) * sr)
        if len(x) > max_len:
            start = int(rng.integers(0, len(x) - max_len))
            x = x[start : start + max_len]
            params["crop_start_s"] = round(start / sr, 3)
        x = fade(x, sr, 0.01, 0.1)
    return Event(cls, x.astype(np.float32), params, count, src)


CLASSES = list(PROCEDURAL) + REAL_CLASSES


def make_event(cls: str, rng, sr: int, heldout: bool) -> Event:
    """One event of ``cls`` (procedural or real), level not yet set."""
    if cls in PROCEDURAL:
        return PROCEDURAL[cls](rng, sr, heldout)
    return real_event(cls, rng, sr, heldout)


# ---------------------------------------------------------------- background beds

BEDS = ["rain", "wind", "traffic_rumble", "electrical_hum", "ocean_waves", "crickets", "noise"]


def _colored(n: int, rng, color: str) -> np.ndarray:
    white = rng.standard_normal(n).astype(np.float32)
    if color == "white":
        return white
    spec = np.fft.rfft(white)
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    spec = spec / (np.sqrt(f) if color == "pink" else f)
    x = np.fft.irfft(spec, n).astype(np.float32)
    return x / (np.std(x) + 1e-9)


def make_bed(kind: str, rng, sr: int, seconds: float) -> tuple[np.ndarray, dict, str]:
    """A full-length background; returns (audio, params, a noun phrase for captions)."""
    n = int(seconds * sr)
    t = _t(n, sr)
    if kind == "rain":
        heavy = bool(rng.random() < 0.5)
        rate = 3000 if heavy else 400
        x = np.zeros(n, dtype=np.float32)
        idx = rng.integers(0, n, size=int(rate * seconds))
        x[idx] = rng.uniform(-1, 1, size=len(idx)).astype(np.float32)
        x = highpass(x + 0.1 * _colored(n, rng, "pink"), sr, 800)
        return x, {"intensity": "heavy" if heavy else "light"}, ("heavy rain" if heavy else "light rain")
    if kind == "wind":
        gusty = bool(rng.random() < 0.5)
        x = bandpass(_colored(n, rng, "pink"), sr, 200, 900)
        if gusty:
            x = x * (0.55 + 0.45 * np.sin(2 * np.pi * float(rng.uniform(0.15, 0.4)) * t + float(rng.uniform(0, 6))))
        return x.astype(np.float32), {"style": "gusty" if gusty else "steady"}, ("gusty wind" if gusty else "steady wind")
    if kind == "traffic_rumble":
        return lowpass(_colored(n, rng, "brown"), sr, 300), {}, "low traffic rumble"
    if kind == "electrical_hum":
        mains = choice(rng, [50, 60])
        x = sum(np.sin(2 * np.pi * mains * h * t) / h for h in (1, 2, 3, 5)) + 0.05 * rng.standard_normal(n)
        return x.astype(np.float32), {"mains_hz": mains}, "an electrical hum"
    if kind == "ocean_waves":
        x = lowpass(_colored(n, rng, "pink"), sr, 1500)
        period = float(rng.uniform(3, 6))
        x = x * (0.3 + 0.7 * np.sin(np.pi * (t / period + float(rng.uniform(0, 1)))) ** 2)
        return x.astype(np.float32), {"wave_period_s": round(period, 2)}, "ocean waves"
    if kind == "crickets":
        carrier = np.sin(2 * np.pi * float(rng.uniform(4000, 5000)) * t)
        chirp_rate = float(rng.uniform(2, 4))
        gate = (np.sin(2 * np.pi * 30 * t) > 0) * (np.sin(2 * np.pi * chirp_rate * t) > 0.3)
        return (carrier * gate + 0.05 * rng.standard_normal(n)).astype(np.float32), {}, "crickets"
    color = choice(rng, ["white", "pink", "brown"])
    return _colored(n, rng, color), {"color": color}, f"{color} noise"

