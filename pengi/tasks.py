"""The task registry: the paper's training templates (Table 1) and downstream tasks (Table 2).

Data only: no I/O and no heavy imports, so rendering (:mod:`pengi.templates`), evaluation-set
building (:mod:`pengi.evalsets`), the data gate (:mod:`pengi.validation`) and the evaluation
engine all read the same definitions.

Reference: Deshmukh et al., "Pengi: An Audio Language Model for Audio Tasks" (NeurIPS 2023),
section 4.1 / Table 1 (templates), section 4.2 / Table 2 (downstream tasks), Table 3 (metrics:
mAP for FSD50K and NSynth sonic, F1 for DCASE 2017, SPIDEr for captioning, R@1 for retrieval,
accuracy elsewhere) and Table 11 (which prompt applies to which task).

Manifest conventions the templates and evaluation sets rely on (``attrs`` keys, all strings):

=====================  ==========================================================================
``attrs`` key          meaning
=====================  ==========================================================================
``scene``              acoustic scene label (else ``labels`` are used)
``emotion``            speech emotion label (else ``labels``)
``sentiment``          speech sentiment label (else ``labels``)
``genre``              music genre (else ``labels``)
``language``           language of the music (optional)
``instrument_source``  NSynth ``instrument_source_str`` (acoustic / electronic / synthetic);
                       the NSynth instrument *family* is the row's ``labels[0]``
``pitch``              MIDI pitch as a decimal string
``velocity``           MIDI velocity as a decimal string
``qualities``          NSynth ``qualities_str`` joined with ``","`` (may be empty)
``fold``               official cross-validation fold, for fold-based evaluation sets
=====================  ==========================================================================

A source that feeds two label tasks (MELD: emotion and sentiment) must set the attrs keys;
the ``labels`` fallback is only unambiguous for single-label-task sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# --------------------------------------------------------------------------------------------
# Training templates (Table 1)
# --------------------------------------------------------------------------------------------

CAPTIONING = "captioning"
AQA = "aqa"
SOUND_EVENT = "sound_event"
ACOUSTIC_SCENE = "acoustic_scene"
EMOTION = "emotion"
SENTIMENT = "sentiment"
MUSIC_ANALYSIS = "music_analysis"
MUSIC_NOTE = "music_note"
METADATA = "metadata"

#: Training task name -> input prompt. ``{question}`` is filled per row for AQA.
TRAIN_PROMPTS: dict[str, str] = {
    CAPTIONING: "generate audio caption",
    AQA: "question: {question}",
    SOUND_EVENT: "this is a sound of",
    ACOUSTIC_SCENE: "this acoustic scene is",
    EMOTION: "this emotion is",
    SENTIMENT: "this sentiment is",
    MUSIC_ANALYSIS: "music analysis",
    MUSIC_NOTE: "this music note is",
    METADATA: "generate metadata",
}

TRAIN_TASKS: tuple[str, ...] = tuple(TRAIN_PROMPTS)

#: The paper's mapping of training sources to templates (section 4.1). Keys are source
#: (adapter) names; ``render.source_tasks`` in params.yaml overrides or extends it.
DEFAULT_SOURCE_TASKS: dict[str, tuple[str, ...]] = {
    "audioset": (SOUND_EVENT,),
    "fsd50k": (SOUND_EVENT,),
    "cochlscene": (ACOUSTIC_SCENE,),
    "msp_podcast": (EMOTION,),
    "cmu_mosi": (SENTIMENT,),
    "cmu_mosei": (SENTIMENT, EMOTION),
    "meld": (EMOTION, SENTIMENT),
    "nsynth": (MUSIC_NOTE,),
    "fma": (MUSIC_ANALYSIS,),
    "audiocaps": (CAPTIONING,),
    "clotho": (CAPTIONING,),
    "clotho_aqa": (AQA,),
    "wavtext5k": (METADATA,),
    "sounddescs": (METADATA,),
    "macs": (METADATA,),
    "wavcaps": (METADATA,),
    "freesound": (METADATA,),
    "findsounds": (METADATA,),
    # Not training sources in the paper; used when a downstream dataset is given role "both"
    # (its own train/val rows then feed the template of its label type).
    "esc50": (SOUND_EVENT,),
    "urbansound8k": (SOUND_EVENT,),
    "dcase2017_task4": (SOUND_EVENT,),
    "vocalsound": (SOUND_EVENT,),
    "sesa": (SOUND_EVENT,),
    "beijing_opera": (SOUND_EVENT,),
    "gtzan_music_speech": (SOUND_EVENT,),
    "gtzan_genres": (MUSIC_ANALYSIS,),
    "tut2017": (ACOUSTIC_SCENE,),
    "crema_d": (EMOTION,),
    "ravdess": (EMOTION,),
}

# --------------------------------------------------------------------------------------------
# Downstream tasks (Table 2)
# --------------------------------------------------------------------------------------------

Kind = Literal["captioning", "qa", "multiclass", "multilabel", "retrieval"]
Metric = Literal["spider", "accuracy", "map", "f1", "recall@1"]
Reference = Literal["captions", "labels", "qa", "attr", "attr_list"]


@dataclass(frozen=True)
class EvalTask:
    """One downstream task of the paper's Table 2.

    Attributes:
        name: task id (also the ``data/eval/<name>.parquet`` stem).
        source: the manifest (adapter) name that holds its data.
        kind: output type; decides how references are compared.
        metric: the paper's metric for the task (Table 3).
        prompt: the evaluation prompt (Table 11); AQA fills ``{question}`` per item.
        reference: where the references come from: ``captions``, ``labels``, the ``qa`` answers,
            one ``attr`` value, or an ``attr_list`` (comma-separated attr value).
        attr_key: the attrs key for ``attr``/``attr_list`` references, else the attrs key preferred
            over ``labels`` when present (``None``: ``labels`` only).
        eval_splits: manifest splits that form the evaluation set; ``None`` = every split
            (fold-based datasets: the folds are kept in a ``fold`` column).
        num_classes: Table 2 class count, an upper bound checked by the data gate (``None``: open).
        vocabulary: the official class names where they are fixed words; the gate checks
            references against them after :func:`normalise_label` (``()``: not checked).
        answer: how the trained target (Table 1) states the class, ``{}`` where it goes:
            ``"{}"`` for a bare label, ``"this is a sound of music in genre {}"`` for genre.
            Text matching reads the class out of the output with it
            (:func:`pengi.inference.extract_answer`; the whole output when it does not match),
            so the words every answer shares do not drown the one that differs; log-likelihood
            ranking scores each class inside it.
        answer_leads: the answer starts the target (log-likelihood scores
            ``answer.format(class)`` right after the prefix). ``False`` for a field in the middle
            of the target (NSynth pitch): log-likelihood then scores the bare class.
    """

    name: str
    source: str
    kind: Kind
    metric: Metric
    prompt: str
    reference: Reference
    attr_key: str | None = None
    eval_splits: tuple[str, ...] | None = ("test",)
    num_classes: int | None = None
    vocabulary: tuple[str, ...] = ()
    answer: str = "{}"
    answer_leads: bool = True


def normalise_label(label: str) -> str:
    """Lower-case, ``_``/``-`` as spaces, single spaces: the form vocabularies are compared in."""
    return " ".join(label.replace("_", " ").replace("-", " ").lower().split())


_ESC50 = (
    "dog", "rooster", "pig", "cow", "frog", "cat", "hen", "insects", "sheep", "crow", "rain",
    "sea_waves", "crackling_fire", "crickets", "chirping_birds", "water_drops", "wind",
    "pouring_water", "toilet_flush", "thunderstorm", "crying_baby", "sneezing", "clapping",
    "breathing", "coughing", "footsteps", "laughing", "brushing_teeth", "snoring",
    "drinking_sipping", "door_wood_knock", "mouse_click", "keyboard_typing", "door_wood_creaks",
    "can_opening", "washing_machine", "vacuum_cleaner", "clock_alarm", "clock_tick",
    "glass_breaking", "helicopter", "chainsaw", "siren", "car_horn", "engine", "train",
    "church_bells", "airplane", "fireworks", "hand_saw",
)  # fmt: skip
_US8K = (
    "air_conditioner", "car_horn", "children_playing", "dog_bark", "drilling", "engine_idling",
    "gun_shot", "jackhammer", "siren", "street_music",
)  # fmt: skip
_TUT2017 = (
    "beach", "bus", "cafe/restaurant", "car", "city_center", "forest_path", "grocery_store", "home",
    "library", "metro_station", "office", "park", "residential_area", "train", "tram",
)  # fmt: skip
_GTZAN_GENRES = ("blues", "classical", "country", "disco", "hiphop", "jazz", "metal", "pop", "reggae", "rock")
_NSYNTH_FAMILIES = (
    "bass", "brass", "flute", "guitar", "keyboard", "mallet", "organ", "reed", "string", "synth_lead", "vocal",
)  # fmt: skip
_NSYNTH_QUALITIES = (
    "bright", "dark", "distortion", "fast_decay", "long_release", "multiphonic", "nonlinear_env",
    "percussive", "reverb", "tempo-synced",
)  # fmt: skip

_CREMA_D = ("anger", "disgust", "fear", "happy", "neutral", "sad")
_RAVDESS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")

_CAP = "generate audio caption"
_SOUND = "this is a sound of"
_NOTE = "this music note is"

EVAL_TASKS: dict[str, EvalTask] = {
    t.name: t
    for t in (
        EvalTask("clotho_captioning", "clotho", "captioning", "spider", _CAP, "captions"),
        EvalTask("audiocaps_captioning", "audiocaps", "captioning", "spider", _CAP, "captions"),
        EvalTask("clotho_aqa", "clotho_aqa", "qa", "accuracy", "question: {question}", "qa"),
        EvalTask("esc50", "esc50", "multiclass", "accuracy", _SOUND, "labels",
                 eval_splits=None, num_classes=50, vocabulary=_ESC50),
        EvalTask("fsd50k", "fsd50k", "multilabel", "map", _SOUND, "labels", num_classes=200),
        EvalTask("urbansound8k", "urbansound8k", "multiclass", "accuracy", _SOUND, "labels",
                 eval_splits=None, num_classes=10, vocabulary=_US8K),
        EvalTask("dcase2017_task4", "dcase2017_task4", "multilabel", "f1", _SOUND, "labels", num_classes=17),
        EvalTask("gtzan_music_speech", "gtzan_music_speech", "multiclass", "accuracy", _SOUND, "labels",
                 eval_splits=None, num_classes=2, vocabulary=("music", "speech")),
        # Genre is asked with the template the genre sources train with (Table 1's music analysis).
        EvalTask("gtzan_genres", "gtzan_genres", "multiclass", "accuracy", TRAIN_PROMPTS[MUSIC_ANALYSIS], "labels",
                 attr_key="genre", answer="this is a sound of music in genre {}",
                 eval_splits=None, num_classes=10, vocabulary=_GTZAN_GENRES),
        EvalTask("beijing_opera", "beijing_opera", "multiclass", "accuracy", _SOUND, "labels",
                 eval_splits=None, num_classes=4, vocabulary=("bangu", "daluo", "naobo", "xiaoluo")),
        # The note template answers every NSynth task in one sentence (Table 1's music note).
        EvalTask("nsynth_instrument", "nsynth", "multiclass", "accuracy", _NOTE, "labels",
                 num_classes=11, vocabulary=_NSYNTH_FAMILIES, answer="produced by {}"),
        EvalTask("nsynth_pitch", "nsynth", "multiclass", "accuracy", _NOTE, "attr", attr_key="pitch",
                 num_classes=128, answer="pitch {}", answer_leads=False),
        EvalTask("nsynth_velocity", "nsynth", "multiclass", "accuracy", _NOTE, "attr", attr_key="velocity",
                 num_classes=128, answer="velocity {}", answer_leads=False),
        EvalTask("nsynth_sonic", "nsynth", "multilabel", "map", _NOTE, "attr_list", attr_key="qualities",
                 num_classes=10, vocabulary=_NSYNTH_QUALITIES, answer="having qualities like {}",
                 answer_leads=False),
        EvalTask("tut2017", "tut2017", "multiclass", "accuracy", "this acoustic scene is", "labels",
                 attr_key="scene", num_classes=15, vocabulary=_TUT2017),
        EvalTask("crema_d", "crema_d", "multiclass", "accuracy", "this emotion is", "labels", attr_key="emotion",
                 eval_splits=None, num_classes=6, vocabulary=_CREMA_D),
        EvalTask("ravdess", "ravdess", "multiclass", "accuracy", "this emotion is", "labels", attr_key="emotion",
                 eval_splits=None, num_classes=8, vocabulary=_RAVDESS),
        EvalTask("vocalsound", "vocalsound", "multiclass", "accuracy", _SOUND, "labels", num_classes=6,
                 vocabulary=("cough", "laughter", "sigh", "sneeze", "sniff", "throatclearing")),
        EvalTask("sesa", "sesa", "multiclass", "accuracy", _SOUND, "labels", num_classes=4),
        EvalTask("clotho_retrieval", "clotho", "retrieval", "recall@1", _CAP, "captions"),
        EvalTask("audiocaps_retrieval", "audiocaps", "retrieval", "recall@1", _CAP, "captions"),
    )
}  # fmt: skip
