"""Which dataset files this process has verified already: planning verifies a dataset's files once
(bocb.data.verify_files), and a second plan of the same files (`bocb check` plans two benchmarks on one
dataset; `bocb run` verifies before it estimates and again as it plans) costs a stat per file."""
from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

FileKey = tuple[str, int, int]

# (path, size, mtime) of files that passed: a file changed since is verified again
VERIFIED: set[tuple[FileKey, ...]] = set()


def files_key(paths: Iterable[str | Path]) -> tuple[FileKey, ...]:
    """What identifies these files' contents without reading them: path, size and modification time."""
    keys = []
    for path in paths:
        stat = os.stat(path)
        keys.append((os.fspath(path), stat.st_size, stat.st_mtime_ns))
    return tuple(keys)
