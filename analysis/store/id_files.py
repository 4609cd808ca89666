"""Parse the campaign id files, which are deliberately dirty.

The real files start with a header of words, are hard-wrapped every 1,000 characters in
the middle of numbers, mix separators (``,`` ``;`` spaces ``|||`` ``;;;``) and glue letters
to digits. Joining the wrapped lines back together and taking every run of digits
restores the ids exactly. Lines of different lengths are not wraps: a file with one id per
line (as analysts export them) reads as such.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

from analysis.errors import DataError
from analysis.store.text_files import read_text

_DIGITS = re.compile(r"\d+")
#: client ids are far shorter; a longer run of digits is ids glued together
MAX_ID_DIGITS = 12
#: from this many numbers on, a file of mostly one-digit numbers is refused
MIN_TOKENS_FOR_SHAPE = 10


@dataclass(frozen=True)
class IdFile:
    """Ids parsed from one file, with what was odd about it."""

    path: str
    ids: tuple[int, ...]
    n_tokens: int
    duplicates: dict[int, int] = field(default_factory=dict)
    #: how the file's bytes were decoded (see :mod:`analysis.store.text_files`)
    encoding: str = "utf-8"

    @property
    def unique(self) -> set[int]:
        return set(self.ids)


def parse_id_text(text: str, source: str = "<text>") -> IdFile:
    """Parse ids from the text of a dirty id file.

    Parameters
    ----------
    text
        Whole file content.
    source
        File name used in error messages.

    Returns
    -------
    IdFile
        Unique ids in order of first appearance, plus any duplicated ids and their counts.

    Raises
    ------
    DataError
        When the text is empty or holds no digits.

    Examples
    --------
    >>> parse_id_text("Ids of people 12,3\\n4;;;5|||7abc8").ids
    (12, 34, 5, 7, 8)
    """
    if not text.strip():
        raise DataError(source, "the id file is empty")
    lines = [ln for ln in text.replace("\r", "").split("\n") if ln]
    # hard wraps (every line but the last of one length, several ids on a line) cut
    # numbers: join them; any other line break (one id per line, as analysts export them,
    # or rows of different lengths) separates ids
    wrapped = (len({len(ln) for ln in lines[:-1]}) == 1
               and max(len(_DIGITS.findall(ln)) for ln in lines) > 1)
    joined = "".join(lines) if wrapped else "\n".join(lines)
    raw = _DIGITS.findall(joined)
    if not raw:
        raise DataError(source, "the id file holds no digits, so no client id could be read")
    long = [t for t in raw if len(t) > MAX_ID_DIGITS]
    if long:
        raise DataError(source, f"{len(long)} run(s) of more than {MAX_ID_DIGITS} digits (the "
                        f"first starts {long[0][:20]}...): ids glued together, not client ids")
    short = sum(len(t) == 1 for t in raw)
    if len(raw) >= MIN_TOKENS_FOR_SHAPE and short > len(raw) / 2:
        raise DataError(source, f"{short} of the {len(raw)} numbers read are single digits: "
                        "client ids are longer, so the file was not read as written (an "
                        "encoding with a byte between digits, or digits separated by "
                        "spaces); save it as UTF-8 with one id per line")
    tokens = [int(t) for t in raw]
    counts = Counter(tokens)
    dups = {i: c for i, c in counts.items() if c > 1}
    return IdFile(path=source, ids=tuple(dict.fromkeys(tokens)), n_tokens=len(tokens),
                  duplicates=dups)


def read_id_file(path: str | Path) -> IdFile:
    """Read and parse one campaign id file (UTF-8, UTF-16 or cp1251, with or without a
    byte-order mark; any line endings; see :mod:`analysis.store.text_files`).

    Raises
    ------
    DataError
        The file is missing, not text in a known encoding, empty, holds no digits, holds
        glued ids, or holds ids that cannot be client ids (most of one digit).
    """
    text, encoding = read_text(path)
    return replace(parse_id_text(text, source=str(path)), encoding=encoding)


@dataclass(frozen=True)
class CampaignGroups:
    """Treated and control ids of campaign 1 and what was found wrong with them."""

    treated: tuple[int, ...]
    control: tuple[int, ...]
    overlap: tuple[int, ...]
    duplicates_treated: dict[int, int]
    duplicates_control: dict[int, int]
    unknown_treated: tuple[int, ...] = ()
    unknown_control: tuple[int, ...] = ()

    def report(self) -> dict[str, object]:
        """Counts and examples of every problem, for the data-quality summary."""
        return {
            "treated_ids": len(self.treated),
            "control_ids": len(self.control),
            "overlap": len(self.overlap),
            "overlap_examples": list(self.overlap[:5]),
            "duplicated_treated": len(self.duplicates_treated),
            "duplicated_control": len(self.duplicates_control),
            "duplicate_examples": list(self.duplicates_treated)[:3]
            + list(self.duplicates_control)[:3],
            "unknown_treated": len(self.unknown_treated),
            "unknown_control": len(self.unknown_control),
            "unknown_examples": list(self.unknown_treated[:3]) + list(self.unknown_control[:3]),
        }


def campaign_groups(
    positive: IdFile, negative: IdFile, known_ids: set[int] | None = None
) -> CampaignGroups:
    """Combine the two id files, reporting overlap and ids unknown to the client tables.

    Overlapping ids are kept in neither group (their assignment is ambiguous); they are
    counted in ``overlap`` rather than dropped silently.
    """
    overlap = tuple(sorted(positive.unique & negative.unique))
    bad = set(overlap)
    treated = tuple(i for i in positive.ids if i not in bad)
    control = tuple(i for i in negative.ids if i not in bad)
    unknown_t: tuple[int, ...] = ()
    unknown_c: tuple[int, ...] = ()
    if known_ids is not None:
        unknown_t = tuple(i for i in treated if i not in known_ids)
        unknown_c = tuple(i for i in control if i not in known_ids)
    return CampaignGroups(treated, control, overlap, positive.duplicates, negative.duplicates,
                          unknown_t, unknown_c)
