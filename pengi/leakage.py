"""Train/test leakage control by cross-dataset identity keys (DESIGN.md §4).

Every training row is checked against every configured evaluation set, and against the WavCaps
blacklists when they are configured, by the manifests' ``identity`` keys
(``freesound:<id>``, ``youtube:<id>@<start>``, ``bbc:<id>``, ``soundbible:<id>``).
Keys are compared after :func:`normalise_keys`: the ``@<start>`` of a YouTube key is dropped,
so two segments of one video count as an overlap. That is deliberately conservative: it is what
the WavCaps blacklists do (they list bare ``Y<ytid>.wav``), and different segments of a video
share recording conditions and often content.

Which rows are "training" and which "evaluation" follows the source's role in
``data.sources``: a ``train`` source contributes its ``train``/``val`` rows, an ``eval`` source
all its rows, and a ``both`` source its ``train``/``val`` rows as training and its ``test`` rows
as evaluation (so an overlap between splits of one dataset is found too). Quarantined rows
never become triples or evaluation rows, so only ``status == "ok"`` rows are checked.
Rows without identity keys cannot be checked; they are counted per source in the report.

On the real metadata in ``shared/datasets``: ESC-50 and UrbanSound8K share 94 Freesound ids, and
WavCaps' ``blacklist_exclude_ub8k_esc50_vggsound.json`` holds 1,247 of ESC-50's 1,524 and 1,050
of UrbanSound8K's 1,297 Freesound ids (``tests/test_leakage.py`` checks both).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from pengi import storage
from pengi.manifest import STATUS_OK

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train", "val")
EVAL_SPLITS_OF_BOTH = ("test",)
_EXAMPLES = 5  # overlapping keys listed per pair in the report, for a human to check

# WavCaps blacklist list name -> how one entry becomes an identity key.
_BLACKLIST_KEYS = {
    "FreeSound": ("freesound", r"^\s*(\d+)(?:\.0)?\s*$"),
    "AudioSet": ("youtube", r"^Y?([A-Za-z0-9_-]{11})(?:_[\d.]+)?(?:\.wav|\.flac)?$"),
}


def normalise_keys(key: pl.Expr) -> pl.Expr:
    """Identity keys in comparable form: no ``@<start>`` suffix; BBC ids lower-case."""
    bare = key.str.strip_chars().str.replace(r"@.*$", "")
    return pl.when(bare.str.starts_with("bbc:")).then(bare.str.to_lowercase()).otherwise(bare)


def identity_frame(rows: pl.DataFrame) -> pl.DataFrame:
    """``source, clip_id, key`` for every (row, normalised identity key); duplicates removed."""
    return (
        rows.select("source", "clip_id", "identity")
        .explode("identity")
        .drop_nulls("identity")
        .select("source", "clip_id", normalise_keys(pl.col("identity")).alias("key"))
        .filter(pl.col("key") != "")
        .unique(maintain_order=True)
    )


def read_wavcaps_blacklist(uri: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Read a WavCaps blacklist (``{"AudioSet": ["Y<ytid>.wav", ...], "FreeSound": ["<id>", ...]}``).

    Returns:
        ``(keys, info)``: a frame with one normalised identity ``key`` per entry, and counts per
        list (entries, keys, and entries that matched no known pattern, which are reported).

    Raises:
        ValueError: not a JSON object of lists, or a list name this reader does not know.
    """
    try:
        data = json.loads(storage.read_text(uri))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{uri}: not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ValueError(f"{uri}: a WavCaps blacklist is a JSON object of lists")
    frames, info = [], {"uri": str(uri), "lists": {}}
    for name, entries in data.items():
        if name not in _BLACKLIST_KEYS:
            raise ValueError(f"{uri}: unknown blacklist list {name!r} (known: {', '.join(_BLACKLIST_KEYS)})")
        namespace, pattern = _BLACKLIST_KEYS[name]
        ids = pl.Series("id", [str(e) for e in entries], dtype=pl.String).str.extract(pattern, 1)
        unparsed = int(ids.is_null().sum())
        if unparsed:
            log.warning("%s: %d %s entries match no known id pattern", uri, unparsed, name)
        frame = (
            pl.DataFrame({"id": ids})
            .select(pl.concat_str(pl.lit(f"{namespace}:"), pl.col("id")).alias("key"))
            .drop_nulls()
            .unique(maintain_order=True)
        )
        info["lists"][name] = {"entries": len(entries), "keys": frame.height, "unparsed": unparsed}
        frames.append(frame)
    keys = pl.concat(frames).unique(maintain_order=True) if frames else pl.DataFrame(schema={"key": pl.String})
    return keys, info


def split_by_role(
    manifests: Mapping[str, pl.DataFrame], roles: Mapping[str, str]
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame]]:
    """The ok training rows and ok evaluation rows of each source, by its role (see module doc).

    Raises:
        KeyError: a manifest whose source has no role.
    """
    train, evals = {}, {}
    for source, df in manifests.items():
        role = roles[source]
        ok = df.filter(pl.col("status") == STATUS_OK)
        if role in ("train", "both"):
            train[source] = ok.filter(pl.col("split").is_in(TRAIN_SPLITS))
        if role == "eval":
            evals[source] = ok
        elif role == "both":
            evals[source] = ok.filter(pl.col("split").is_in(EVAL_SPLITS_OF_BOTH))
    return train, evals


@dataclass
class LeakageResult:
    """Overlaps found and the training rows to exclude.

    Attributes:
        pairs: one entry per (training source, evaluation source): overlapping training rows,
            overlapping evaluation rows, shared keys and a few example keys.
        blacklists: one entry per (training source, blacklist file): rows and keys hit.
        unchecked: training rows without any identity key, per source.
        excluded: ``source, clip_id`` of the training rows to leave out (empty when exclusion
            is off).
        exclude: whether overlapping rows are excluded.
    """

    pairs: list[dict[str, Any]] = field(default_factory=list)
    blacklists: list[dict[str, Any]] = field(default_factory=list)
    blacklist_files: list[dict[str, Any]] = field(default_factory=list)
    unchecked: dict[str, int] = field(default_factory=dict)
    excluded: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"source": pl.String, "clip_id": pl.String}))
    exclude: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able report (the excluded rows are counted per source, not listed)."""
        per_source = dict(sorted(self.excluded.group_by("source").len().iter_rows())) if self.excluded.height else {}
        return {
            "exclude": self.exclude,
            "excluded_rows": self.excluded.height,
            "excluded_per_source": per_source,
            "pairs": self.pairs,
            "blacklists": self.blacklists,
            "blacklist_files": self.blacklist_files,
            "rows_without_identity": self.unchecked,
        }


def check_leakage(
    train: Mapping[str, pl.DataFrame],
    evals: Mapping[str, pl.DataFrame],
    blacklists: Sequence[tuple[str, pl.DataFrame]] = (),
    exclude: bool = True,
) -> LeakageResult:
    """Find training rows whose identity keys occur in an evaluation set or a blacklist.

    Args:
        train: source -> training rows (manifest frames; see :func:`split_by_role`).
        evals: source -> evaluation rows.
        blacklists: ``(name, keys)`` pairs, ``keys`` as from :func:`read_wavcaps_blacklist`.
        exclude: collect the overlapping training rows into ``excluded``.

    Returns:
        A :class:`LeakageResult`; every (train, eval) pair and every (train, blacklist) pair is
        reported, zero counts included.
    """
    empty = pl.DataFrame(schema={"source": pl.String, "clip_id": pl.String, "key": pl.String})
    t_keys = pl.concat([identity_frame(df) for df in train.values()]) if train else empty
    e_keys = pl.concat([identity_frame(df) for df in evals.values()]) if evals else empty
    result = LeakageResult(exclude=exclude)
    result.unchecked = {s: int((df.get_column("identity").list.len() == 0).sum()) for s, df in sorted(train.items())}

    hits = t_keys.join(e_keys.rename({"source": "eval_source", "clip_id": "eval_clip_id"}), on="key", how="inner")
    grouped = {
        (r["source"], r["eval_source"]): r
        for r in hits.group_by("source", "eval_source")
        .agg(
            pl.col("clip_id").n_unique().alias("train_rows"),
            pl.col("eval_clip_id").n_unique().alias("eval_rows"),
            pl.col("key").n_unique().alias("shared_keys"),
            pl.col("key").unique().sort().head(_EXAMPLES).alias("examples"),
        )
        .iter_rows(named=True)
    }
    for t in sorted(train):
        for e in sorted(evals):
            g = grouped.get((t, e), {})
            result.pairs.append(
                {
                    "train": t,
                    "eval": e,
                    "train_rows": int(g.get("train_rows", 0)),
                    "eval_rows": int(g.get("eval_rows", 0)),
                    "shared_keys": int(g.get("shared_keys", 0)),
                    "examples": list(g.get("examples", [])),
                }
            )
    bl_hits = []
    for name, keys in blacklists:
        h = t_keys.join(keys.select("key").unique(), on="key", how="inner")
        counts = {
            r["source"]: r
            for r in h.group_by("source")
            .agg(pl.col("clip_id").n_unique().alias("train_rows"), pl.col("key").n_unique().alias("keys"))
            .iter_rows(named=True)
        }
        for t in sorted(train):
            c = counts.get(t, {})
            result.blacklists.append(
                {"train": t, "blacklist": name, "train_rows": int(c.get("train_rows", 0)), "keys": int(c.get("keys", 0))}
            )
        bl_hits.append(h.select("source", "clip_id"))
    if exclude:
        result.excluded = (
            pl.concat([hits.select("source", "clip_id"), *bl_hits]).unique().sort("source", "clip_id")
        )
    n = sum(p["train_rows"] for p in result.pairs)
    if n:
        log.warning("leakage: %d training row hits against evaluation sets (exclude=%s)", n, exclude)
    return result


def check_manifests(
    manifests: Mapping[str, pl.DataFrame],
    roles: Mapping[str, str],
    blacklist_uris: Sequence[str] = (),
    exclude: bool = True,
) -> LeakageResult:
    """:func:`check_leakage` over whole manifests: rows by role, blacklists read from ``blacklist_uris``.

    Raises:
        FileNotFoundError: a configured blacklist does not exist.
        ValueError: a blacklist is malformed.
    """
    train, evals = split_by_role(manifests, roles)
    blacklists, files = [], []
    for uri in blacklist_uris:
        if not storage.exists(uri):
            raise FileNotFoundError(f"WavCaps blacklist {uri} (data.wavcaps_blacklists) does not exist")
        keys, info = read_wavcaps_blacklist(uri)
        blacklists.append((str(uri).rsplit("/", 1)[-1], keys))
        files.append(info)
    result = check_leakage(train, evals, blacklists, exclude)
    result.blacklist_files = files
    return result
