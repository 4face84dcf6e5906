"""Dataset adapters: each dataset's native layout -> canonical manifest rows.

``ADAPTERS`` maps a name to its adapter function; :func:`get_adapter` looks one up and
:func:`run_adapter` checks options and runs it. See ``base.py`` for the protocol and
``README.md`` in this folder for every adapter's split mapping, labels, attrs and identity keys.
"""

from pengi.sources.base import (
    ADAPTERS,
    AudioIndex,
    MetadataError,
    SourceRead,
    adapter_options,
    get_adapter,
    run_adapter,
)

# Importing the modules registers their adapters.
from pengi.sources import (  # noqa: E402,F401  isort: skip
    audiofolder,
    captions,
    clotho,
    emotion,
    freesound_eval,
    fsd50k,
    music,
    nsynth,
    scenes,
    sentiment,
    vocal,
    youtube,
)

__all__ = ["ADAPTERS", "AudioIndex", "MetadataError", "SourceRead", "adapter_options", "get_adapter", "run_adapter"]
