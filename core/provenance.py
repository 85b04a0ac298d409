"""Files this installation wrote, remembered by content (sha256, files.py) in a per-user folder.

Some files are loaded into native parsers or run as graphs: an index folder's faiss file and
the ONNX text encoder cached per model. A crafted one could return any result (an encoder that
gives every query the same vector passes a check on one probe text), so they are used only if
their exact bytes were written by this installation; any other (an index folder shared by a
colleague, a file changed in place) is rebuilt from data that is checked first. A digest is
an empty file named by it, so concurrent writers need no lock; losing the folder costs only
rebuilding those files once.
"""
from __future__ import annotations

from pathlib import Path

from ssjdn.core.places import cache_dir


def remember_written(digest: str) -> None:
    """Record that this installation wrote a file with this sha256 (best effort)."""
    try:
        folder = _folder()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / digest).touch()
    except OSError:
        pass   # then the file is rebuilt the next time: slower, never wrong


def written_here(digest: str) -> bool:
    return (_folder() / digest).is_file()


def _folder() -> Path:
    return cache_dir() / "written-files"
