"""Text encodings: which one a file is in, and one line that says so when it is not the given one.

A file that does not decode is named with the first byte that fails (its offset and line), a
guess at its encoding, and the option that sets it (`task.data.encoding`, `--encoding`).
"""

from __future__ import annotations

import bz2
import codecs
import gzip
import lzma
from pathlib import Path
from typing import Any

from hf_transfer.errors import UserError

_ENCODING_EXAMPLES = "e.g. cp1252, latin-1, utf-16"


def open_binary(path: Path) -> Any:
    """A file as bytes, uncompressed where its name says gzip, bz2 or xz."""

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix.lower(), open)
    return opener(path, "rb")


def check_encoding(name: str, key: str) -> None:
    """Refuse an encoding name Python does not know."""
    try:
        codecs.lookup(name)
    except LookupError:
        raise UserError(
            f"unknown text encoding '{name}' ({key}); give one Python knows ({_ENCODING_EXAMPLES})"
        ) from None


def decode_text(data: bytes, encoding: str | None, what: str, fix: str) -> str:
    """`data` decoded (utf-8 by default, a byte-order mark dropped), or a UserError naming
    `what` (e.g. "input file 'x.csv' (--file)"), the first byte that cannot be decoded (offset,
    line), a guess at the encoding and `fix` with it: fix.format(encoding=GUESS). Binary data
    is refused as such, whatever the encoding (latin-1 decodes any byte)."""
    refuse_binary(data[:BINARY_SAMPLE], encoding, what)
    try:
        return data.decode(encoding or "utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        sample = data[max(0, err.start - (1 << 19)) : err.start + (1 << 19)]
        raise _undecodable(what, encoding, err.start, data[err.start], line, sample, fix) from None


def refuse_undecodable(path: Path, encoding: str | None, key: str) -> None:
    """Raise the decoding message for a data file that is not text in `encoding`, if it is not."""
    try:
        with open_binary(path) as stream:
            refuse_binary(stream.read(BINARY_SAMPLE), encoding, f"data file '{path}' ({key})")
    except (OSError, EOFError, ValueError):  # unreadable or a broken archive: reported where it is read
        pass
    problem = _first_undecodable(path, encoding)
    if problem is not None:
        compressed = path.suffix.lower() in {".gz", ".bz2", ".xz"}
        where = f"data file '{path}' ({key}){' uncompressed' if compressed else ''}"
        raise _undecodable(where, encoding, *problem, "set task.data.encoding={encoding}")


def _first_undecodable(
    path: Path, encoding: str | None, chunk_size: int = 1 << 20
) -> tuple[int, int, int, bytes] | None:
    """(offset, byte value, line number, a sample of the bytes around it) of the first byte of
    the file that `encoding` cannot decode; None when it all decodes (or cannot be read: that is
    reported elsewhere)."""
    decoder = codecs.getincrementaldecoder(encoding or "utf-8-sig")()
    fed = newlines = 0
    previous = b""
    try:
        with open_binary(path) as stream:
            while True:
                chunk = stream.read(chunk_size)
                try:
                    decoder.decode(chunk, final=not chunk)
                except UnicodeDecodeError as err:
                    # err.object: what the decoder held back from the last chunk, then this one.
                    held = len(err.object) - len(chunk)
                    offset = fed - held + err.start
                    line = newlines - err.object.count(b"\n", 0, held) + err.object.count(b"\n", 0, err.start) + 1
                    joined = previous + chunk
                    at = len(joined) - len(err.object) + err.start
                    return offset, err.object[err.start], line, joined[max(0, at - (1 << 19)) : at + (1 << 19)]
                except UnicodeError:  # utf-16 or utf-32 without a byte-order mark: read as a stream, Python needs one
                    head = (previous + chunk)[: 1 << 20]
                    return 0, head[0] if head else 0, 1, head
                if not chunk:
                    return None
                fed += len(chunk)
                newlines += chunk.count(b"\n")
                previous = chunk
    except (OSError, EOFError, ValueError):
        return None


def _undecodable(
    what: str, encoding: str | None, offset: int, byte: int, line: int, sample: bytes, fix: str
) -> UserError:
    name = encoding or "utf-8"
    # Lines are counted by newline bytes: not in the utf-16/32 family.
    where = "" if codecs.lookup(name).name.startswith(("utf-16", "utf-32")) else f" (line {line})"
    if codecs.lookup(name).name in ("utf-16", "utf-32") and not sample.startswith(
        (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
    ):
        where = f" (no byte-order mark: name the byte order, {name}-le or {name}-be)"
    guess = guess_encoding(sample, name)
    advice = (
        f"it looks like {guess}: {fix.format(encoding=guess)} (or the file's own encoding)"
        if guess
        else f"{fix.format(encoding='ENCODING')} with the file's encoding ({_ENCODING_EXAMPLES})"
    )
    return UserError(f"{what} is not valid {name} text: byte 0x{byte:02x} at offset {offset}{where}; {advice}")


BINARY_SAMPLE = 1 << 16  # the bytes looked at to tell a binary file from text
# Bytes no text file holds (control characters other than tab, newlines, form feed, escape).
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 11, 12, 13, 27))
_WIDE = ("utf-16", "utf-32")


def refuse_binary(sample: bytes, encoding: str | None, what: str) -> None:
    """A UserError for data that is not text at all (an image, an archive, a model file), found
    by its control bytes: a text file holds none but a stray one. Text in utf-16 or utf-32 (zero
    bytes in every character) is left to the decoding check."""
    if not sample or (encoding and codecs.lookup(encoding).name.startswith(_WIDE)):
        return
    if sample.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return
    if _wide_without_mark(sample):  # utf-8 would read it, a NUL between every two letters
        order = "le" if sample[1::2].count(0) > sample[0::2].count(0) else "be"
        raise UserError(
            f"{what} looks like utf-16 text without a byte-order mark (a zero byte in every other position): "
            f"give its encoding, utf-16-{order} (task.data.encoding, or --encoding for predict)"
        )
    controls = len(sample) - len(sample.translate(None, _CONTROL))
    if controls == 0 or (controls < max(len(sample) // 1000, 2) and b"\0" not in sample):
        return
    offset = next(i for i, b in enumerate(sample) if b in _CONTROL)
    raise UserError(
        f"{what} looks like a binary file, not text: byte 0x{sample[offset]:02x} at offset {offset}, and "
        f"{controls - 1} more control bytes in its first {len(sample):,} bytes; give a text file "
        "(.txt, .csv, .tsv or .jsonl)"
    )


def _wide_without_mark(sample: bytes) -> bool:
    """Mostly-ASCII utf-16 text: a zero byte in nearly every other position, and printable
    characters in the others (a program or an image has zeros everywhere, and no such order)."""
    half = len(sample) // 2
    if half < 2:
        return False
    for zeros, chars in ((sample[0::2], sample[1::2]), (sample[1::2], sample[0::2])):
        if zeros.count(0) > 0.8 * half:
            printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in chars)
            return printable > 0.8 * len(chars)
    return False


_LATIN_ALPHABETS = {
    "Basic Latin", "Latin-1 Supplement", "Latin Extended-A", "Latin Extended-B", "Latin Extended Additional",
    "General Punctuation", "Control character", "Currency Symbols", "Spacing Modifier Letters",
    "Letterlike Symbols",
}  # fmt: skip
_CENTRAL_EUROPEAN = {"Polish", "Czech", "Slovak", "Hungarian", "Croatian", "Slovene", "Romanian"}


def guess_encoding(sample: bytes, failed: str) -> str | None:
    """A likely encoding of `sample` other than `failed`, or None: a byte-order mark; utf-8;
    charset_normalizer's guess where it is installed and the text is in a non-Latin script
    (its guesses among the Latin code pages are unreliable on the few accented letters of
    mostly-English data); else cp1252 (Windows' Western European, a superset of latin-1's
    printable characters) or latin-1."""
    failed = codecs.lookup(failed).name
    candidates = []
    for mark, name in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):  # fmt: skip
        if sample.startswith(mark):
            candidates.append(name)
            break
    if len(sample) >= 4 and not candidates:  # utf-16 without a mark: ASCII text has a zero byte in every pair
        even, odd = sample[0::2], sample[1::2]
        if odd.count(0) > len(odd) * 0.3 and even.count(0) < len(even) * 0.05:
            candidates.append("utf-16-le")
        elif even.count(0) > len(even) * 0.3 and odd.count(0) < len(odd) * 0.05:
            candidates.append("utf-16-be")
    if _decodes(sample, "utf-8"):
        candidates.append("utf-8")
    if sum(byte > 127 for byte in sample) >= 8:
        try:
            import charset_normalizer

            best = charset_normalizer.from_bytes(sample[: 1 << 20]).best()
        except Exception:  # noqa: BLE001 - a guess only; any failure means no guess
            best = None
        if best is not None:
            latin = set(best.alphabets) <= _LATIN_ALPHABETS
            if not latin or best.language in _CENTRAL_EUROPEAN:
                candidates.append(best.encoding)
    candidates += ["cp1252", "latin-1"]
    for name in candidates:
        if codecs.lookup(name).name != failed and _decodes(sample, name):
            return name
    return None


def _decodes(data: bytes, encoding: str) -> bool:
    try:
        codecs.getincrementaldecoder(encoding)().decode(data)  # a sample may end inside a character
    except UnicodeDecodeError:
        return False
    return True
