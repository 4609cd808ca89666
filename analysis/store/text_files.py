"""Read the text files analysts bring: encodings and separators detected, or refused.

The store's CSV and id files reach shopbayes through Excel, Notepad and database browsers
on Russian-locale machines, so the same table arrives as UTF-8 (with or without a
byte-order mark), UTF-16 (Notepad's "Unicode", with or without one) or cp1251 (Excel's
"CSV" in a Russian locale), separated by ``,``, ``;`` (Excel where the decimal mark is a
comma) or tabs ("Unicode text").

The set of encodings is closed, so the choice among them is made by rules that cannot
guess wrong on these files, in this order: a byte-order mark; NUL bytes in every other
position (UTF-16 without a mark: digits and Latin letters take one NUL byte each); strict
UTF-8 (valid UTF-8 is almost never an accident); cp1251, accepted only when the text it
gives is made of letters, digits, punctuation and whitespace. Anything else is refused
with the encoding found. (A statistical detector such as charset-normalizer chooses among
some 90 encodings and reads short digit-only files, the id files, as whatever it likes.)
The separator is :class:`csv.Sniffer`'s choice among ``,`` ``;`` and tab, checked by the
field count of the first lines.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from analysis.errors import DataError

SEPARATORS = (",", ";", "\t")
_SAMPLE = 64 * 1024
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


@dataclass(frozen=True)
class TextInfo:
    """How a text file was read: its encoding and, for tables, the separator."""

    encoding: str
    separator: str | None = None

    def describe(self) -> str:
        sep = {None: "", ",": ", comma-separated", ";": ", semicolon-separated",
               "\t": ", tab-separated"}[self.separator]
        return f"{self.encoding}{sep}"


def read_as_usual(description: str) -> bool:
    """Whether a file was read the default way (UTF-8, commas): nothing worth a note."""
    return description in ("utf-8", "utf-8, comma-separated")


def _plausible(text: str) -> bool:
    """Letters (any script), digits, punctuation and whitespace: what a table holds."""
    if not text:
        return True
    bad = sum(1 for ch in text if not (ch.isprintable() or ch in "\r\n\t"))
    return bad / len(text) < 0.001


def decode(data: bytes, source: str | Path) -> tuple[str, str]:
    """Decode the bytes of a text file (see the module rules).

    Returns
    -------
    (text, encoding)
        ``encoding`` is one of ``utf-8``, ``utf-8-sig``, ``utf-16``, ``utf-16-le``,
        ``utf-16-be``, ``cp1251``.

    Raises
    ------
    DataError
        The bytes are none of those encodings (the message names what was found: binary
        content, or the first byte that fits none).
    """
    for bom, enc in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(enc), enc
            except UnicodeDecodeError as exc:
                raise DataError(source, f"starts with a {enc.upper()} byte-order mark but is "
                                f"not valid {enc.upper()} ({exc.reason} at byte "
                                f"{exc.start})") from exc
    head = data[:_SAMPLE]
    if len(head) >= 2 and head.count(0) >= max(1, len(head) // 4):
        even, odd = head[0::2].count(0), head[1::2].count(0)
        enc = "utf-16-le" if odd > even else "utf-16-be"
        try:
            text = data.decode(enc)
        except UnicodeDecodeError as exc:
            raise DataError(source, "binary content (NUL bytes, and not valid UTF-16 "
                            "either), not a text file") from exc
        if _plausible(text):
            return text, enc
        raise DataError(source, "binary content (NUL bytes), not a text file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = data.decode("cp1251", errors="replace")
        if "\ufffd" not in text and _plausible(text):
            return text, "cp1251"
        raise DataError(source, "not text in UTF-8, UTF-16 or cp1251 (the encodings "
                        "shopbayes reads): save the file as UTF-8") from None
    if not _plausible(text):
        raise DataError(source, "binary content (control characters), not a text file")
    return text, "utf-8"


def read_text(path: str | Path) -> tuple[str, str]:
    """Read a text file (gzip-compressed when its name ends in ``.gz``) and decode it.

    Raises
    ------
    DataError
        The file is missing, is not valid gzip, or is not text (see :func:`decode`).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file not found")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(path, f"not a readable gzip file: {exc}") from exc
    return decode(data, path)


def sniff_separator(text: str) -> str:
    """The separator of a table's text: ``,``, ``;`` or tab (``,`` for one column).

    :class:`csv.Sniffer` picks among the three; its choice is kept when the header has
    more than one field with it, else the separator that splits the header most is taken.
    """
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if not lines:
        return ","
    try:
        sep = csv.Sniffer().sniff("\n".join(lines), delimiters="".join(SEPARATORS)).delimiter
    except csv.Error:
        sep = None
    counts = {s: len(next(csv.reader([lines[0]], delimiter=s))) for s in SEPARATORS}
    if sep in counts and counts[sep] > 1:
        return sep
    best = max(SEPARATORS, key=lambda s: counts[s])
    return best if counts[best] > 1 else ","


def read_csv_text(path: str | Path) -> tuple[pd.DataFrame, TextInfo]:
    """Read a CSV table as text columns, detecting its encoding and separator.

    Every value is kept as a string (empty cells as missing) for the schema to type.

    Raises
    ------
    DataError
        Unreadable file or encoding (see :func:`read_text`), or rows that do not split
        into the header's fields.
    """
    text, enc = read_text(path)
    sep = sniff_separator(text)
    try:
        raw = pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False,
                          na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(path, f"not a readable CSV file ({enc}, separator {sep!r}): {exc}"
                        ) from exc
    raw.columns = [str(c).strip() for c in raw.columns]
    return raw.reset_index(drop=True), TextInfo(enc, sep)
