"""Identity of files by content, so that a record of one survives moving or copying it."""
import hashlib
import os
from typing import Dict


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
