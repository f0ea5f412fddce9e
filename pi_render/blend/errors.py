"""Every problem with a .blend file is a BlendFileError that names the file (and the offset)."""

import struct
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class BlendFileError(Exception):
    """Raised for any .blend file the reader cannot use; the only exception it lets out."""

    def __init__(self, message: str, path: Path | str) -> None:
        super().__init__(f"{path}: {message}")
        self.message = message
        self.path = Path(path)


class NotABlendFile(BlendFileError):
    """Raised when the bytes are not a .blend file (nor a gzip/zstd-compressed one)."""


class TruncatedBlendFile(BlendFileError):
    """Raised when the file ends before a block, the SDNA or the compressed stream does."""


class CorruptBlendFile(BlendFileError):
    """Raised when a length, count or pointer makes no sense; carries the offset."""

    def __init__(self, message: str, path: Path | str, offset: int) -> None:
        super().__init__(f"{message} (at byte {offset})", path)
        self.offset = offset


class UnsupportedBlendFile(BlendFileError):
    """Raised for a valid-looking file in a layout this reader does not know."""


def guarded(path: Path, build: Callable[[], T]) -> T:
    """Turn the low-level errors a corrupt file can cause into BlendFileErrors."""
    try:
        return build()
    except BlendFileError:
        raise
    except KeyError as exc:
        raise UnsupportedBlendFile(f"this file's SDNA has no {exc.args[0]}", path) from None
    except (struct.error, IndexError, ValueError, TypeError, OverflowError) as exc:
        raise CorruptBlendFile(f"inconsistent data ({exc})", path, 0) from None
