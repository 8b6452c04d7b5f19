"""Files: written atomically, and identified by content (a record of one survives moving or
copying it)."""
import hashlib
import json
import os
import shutil
import threading
from typing import IO, Any, Callable, Dict


def atomic_write(path: str, write: Callable[[IO[bytes]], None], *, durable: bool = True, unique: bool = False) -> None:
    """Write ``path`` through ``write(file)`` (a binary file) so that it is either complete or
    untouched: the data goes to a temporary file in the same folder, which is renamed over
    ``path`` (``os.replace`` is atomic on one file system). If ``write`` fails the temporary file
    is removed; a process killed meanwhile leaves only the temporary file.

    Args:
        durable: flush and fsync the data before the rename and the folder after it, so the new
            file survives a crash of the machine (off for many small files that can be rebuilt:
            rendered pages, cached teacher features).
        unique: name the temporary file ``<path>.<pid>.<thread>.tmp`` instead of ``<path>.tmp``,
            for files that several processes or threads may write at once (the last rename wins,
            every version is whole).
    """
    tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp" if unique else f"{path}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
        _fsync_folder(os.path.dirname(os.path.abspath(path)))


def atomic_write_text(path: str, text: str, *, durable: bool = True, unique: bool = False) -> None:
    """:func:`atomic_write` of ``text`` (UTF-8): reports a long job rewrites as it goes stay whole
    when it is killed."""
    data = text.encode("utf-8")
    atomic_write(path, lambda f: f.write(data), durable=durable, unique=unique)


def atomic_copy(source: str, path: str, *, durable: bool = True) -> None:
    """Copy the file ``source`` to ``path`` with :func:`atomic_write` (a reader never sees half of it)."""
    with open(source, "rb") as src:
        atomic_write(path, lambda dst: shutil.copyfileobj(src, dst), durable=durable)


def atomic_write_json(path: str, data: Any, *, durable: bool = True, unique: bool = False, **dump_kwargs) -> None:
    """:func:`atomic_write_text` of ``json.dumps(data, **dump_kwargs)``."""
    text = json.dumps(data, **dump_kwargs)  # before the temporary file: data that is not JSON leaves nothing behind
    atomic_write_text(path, text, durable=durable, unique=unique)


def _fsync_folder(folder: str) -> None:
    """Make a rename durable (best effort: not every platform can open a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
