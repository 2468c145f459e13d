"""Tokens and the bytes they carry: which tokens are pieces of one multi-byte UTF-8 character.

Byte-level BPE tokenizers (GPT-2 and its descendants) split an emoji or a CJK character that is not
in their vocabulary into byte tokens: ``"😀"`` becomes four tokens whose text alone is ``\\xf0``,
``\\x9f``... . :func:`multibyte_chars` maps each such position back to the character its bytes
belong to, so a view can say "😀, bytes 1–2 of 4". Pure functions of the tokenizer and ids (no
model, no torch).

Two kinds of byte-level pieces are understood: GPT-2's printable byte alphabet (every byte mapped
to one character, see :func:`byte_decoder`) and SentencePiece byte fallback tokens (``<0xF0>``).
Any other piece (special tokens, SentencePiece words) is text: it ends a byte run.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Sequence

__all__ = ["byte_decoder", "token_bytes", "multibyte_chars"]

_SP_BYTE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character -> byte table (transformers 5 no longer exports it): printable
    latin-1 bytes map to themselves, the other 68 bytes to U+0100 onwards, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return {chr(b): b for b in keep} | {chr(256 + n): b for n, b in enumerate(extra)}


def token_bytes(tokenizer: Any, token_id: int) -> bytes | None:
    """The raw bytes a byte-level token stands for, or None when its piece is not byte-level."""
    piece = tokenizer.convert_ids_to_tokens(int(token_id))
    if not isinstance(piece, str) or not piece:
        return None
    special = getattr(tokenizer, "all_special_tokens", None) or ()
    if piece in special:
        return None
    m = _SP_BYTE.match(piece)
    if m:
        return bytes([int(m.group(1), 16)])
    table = byte_decoder()
    if all(c in table for c in piece):
        return bytes(table[c] for c in piece)
    return None


def _utf8_length(lead: int) -> int:
    """Bytes in the UTF-8 sequence that starts with `lead` (0: not a lead byte)."""
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0


def multibyte_chars(tokenizer: Any, token_ids: Sequence[int]) -> dict[int, list[tuple[str, int, int, int]]]:
    """For each position that holds part of a UTF-8 character spread over several tokens:
    ``[(char, first_byte, last_byte, n_bytes), ...]`` (bytes counted from 1 within the character;
    usually one entry, two when a token ends one split character and starts the next).

    Characters wholly inside one token are not reported, nor are invalid byte sequences.
    """
    out: dict[int, list[tuple[str, int, int, int]]] = {}
    if tokenizer is None or not hasattr(tokenizer, "convert_ids_to_tokens"):
        return out
    stream: list[tuple[int, int]] = []  # (byte, position) over a run of byte-level tokens

    def flush() -> None:
        i = 0
        while i < len(stream):
            n = _utf8_length(stream[i][0])
            chunk = stream[i : i + n]
            if n <= 1 or len(chunk) < n or any(not 0x80 <= b <= 0xBF for b, _ in chunk[1:]):
                i += 1
                continue
            try:
                ch = bytes(b for b, _ in chunk).decode("utf-8")
            except UnicodeDecodeError:
                i += 1
                continue
            owners = [p for _, p in chunk]
            if len(set(owners)) > 1:
                for p in dict.fromkeys(owners):
                    idx = [k + 1 for k, q in enumerate(owners) if q == p]
                    out.setdefault(p, []).append((ch, idx[0], idx[-1], n))
            i += n
        stream.clear()

    for pos, tid in enumerate(token_ids):
        raw = token_bytes(tokenizer, int(tid))
        if raw is None:
            flush()
            continue
        stream.extend((b, pos) for b in raw)
    flush()
    return out
