"""SHA-256 over streams, so a file is hashed in the same pass that reads or stores it.

The backend's duplicate check and the waveform key both rest on the lowercase hex SHA-256 of
the object's exact bytes (CONTRACT.md §2); these helpers never hold more than one chunk.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

__all__ = ["CHUNK_BYTES", "Digest", "sha256_chunks", "sha256_file"]

#: Big enough that hashing runs at memory speed, small enough to keep RSS flat.
CHUNK_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Digest:
    """What one pass over the bytes found."""

    #: Lowercase hex SHA-256.
    sha256: str
    #: How many bytes were read.
    size: int


def sha256_chunks(chunks: Iterable[bytes],
                  write: Callable[[bytes], object] | None = None) -> Digest:
    """Hash byte chunks as they pass, handing each to ``write`` (a file) when given."""
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        hasher.update(chunk)
        if write is not None:
            write(chunk)
        size += len(chunk)
    return Digest(hasher.hexdigest(), size)


def sha256_file(source: BinaryIO, chunk_bytes: int = CHUNK_BYTES) -> Digest:
    """Hash an open binary file from its current position to the end."""
    return sha256_chunks(iter(lambda: source.read(chunk_bytes), b""))
