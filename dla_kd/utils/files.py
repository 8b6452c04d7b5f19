"""Identity of files by content, so that a record of one survives moving or copying it; writes
and copies that a reader in another thread or process never sees half done."""
import hashlib
import json
import os
import shutil
import threading
from typing import Any, Dict


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks; about 1 s for a 230 MB checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_fingerprint(path: str) -> Dict:
    """``{"path", "size", "mtime_ns", "sha256"}`` of a file: where it was (for messages) and what
    it is (``sha256``, ``size``: compare these, the path and time change when it is copied)."""
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": file_sha256(path)}


def _temporary_beside(path: str) -> str:
    """A file name next to ``path``, private to this process and thread."""
    return f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"


def write_json_atomically(path: str, obj: Any, **dump_kwargs) -> None:
    """``json.dump(obj)`` to ``path`` through a temporary file and ``os.replace``: a reader sees the
    old file or the new one, never a partial one (a failed write leaves the old file)."""
    tmp = _temporary_beside(path)
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, **dump_kwargs)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def copy_atomically(src: str, dst: str) -> None:
    """``shutil.copyfile(src, dst)`` through a temporary file and ``os.replace`` (see
    ``write_json_atomically``)."""
    tmp = _temporary_beside(dst)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
