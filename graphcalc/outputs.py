"""Files graphcalc writes: never over one it reads, never two at one path, never half-written.

Every output (`-o`, `--svg`, `--timeline-svg`, `--snapshot`, `trace -o`, `fit --plot`, `render -o`)
goes through `write_atomic`: the bytes go to a temporary file beside the target, which then
replaces it in one step (`os.replace`), so a full disk or a crash leaves the old file whole.
`check_outputs` refuses, before anything runs, an output path that is the model file (or the
config it came from) and two outputs given one path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Iterable

from graphcalc.errors import RenderError, UsageError


def _same(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_outputs(reads: Iterable[Path | str | None], writes: dict[str, Path | str | None]):
    """Refuse outputs that would overwrite a file being read, or each other. `writes` maps an
    option ('-o', '--svg') to its path (None: not given)."""
    given = {flag: Path(p) for flag, p in writes.items() if p is not None}
    for flag, path in given.items():
        for read in reads:
            if read is not None and _same(path, Path(read)):
                raise UsageError(f"{flag} {path} is the model file being analysed: choose "
                                 "another path")
        if path.exists() and path.is_dir():
            raise UsageError(f"{flag} {path} is a folder: give a file path")
    flags = list(given)
    for i, a in enumerate(flags):
        for b in flags[i + 1:]:
            if _same(given[a], given[b]):
                raise UsageError(f"{a} and {b} are the same file, {given[a]}: give each its own")


def write_atomic(path: Path | str, data: bytes | str) -> None:
    """Write `data` to `path` whole or not at all."""
    path = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    folder = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise RenderError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            try:
                os.chmod(tmp, path.stat().st_mode & 0o7777)
            except OSError:
                pass
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RenderError(f"cannot write {path}: {e.strerror or e}") from None
