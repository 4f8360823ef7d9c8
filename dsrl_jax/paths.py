"""Paths that may be local or URLs (gs://, s3://, ...): one place, over etils.epath.

Workdirs, metrics, TensorBoard, checkpoints, exports and model directories all go through
here or through `epath.Path` directly, so `--workdir=gs://bucket/run` and
`--config.model.init=gs://bucket/model` work (URLs need the filesystem's fsspec package,
e.g. `pip install gcsfs`, the `gcs` extra). Orbax writes checkpoints to URLs itself.

Two things object stores cannot do are handled by a local copy:
  - reading with memory maps or by libraries that want a directory (safetensors,
    tokenizers): `local_copy(url)` downloads a directory once into a cache;
  - appending (metrics.jsonl, responses.jsonl, progress logs) and writers that want a
    local directory (TensorBoard, `save_pretrained`): `staged(url)` gives a local directory
    that starts as a copy of the remote one and whose new or changed files are uploaded
    on `sync()` and on exit.
For a local path both are the path itself.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from typing import Iterator

from etils import epath

_CHUNK = 16 * 2**20


def is_url(path: str | os.PathLike) -> bool:
    return "://" in os.fspath(path)


def normalize(path: str | os.PathLike) -> str:
    """An absolute local path, or the URL without a trailing slash."""
    path = os.fspath(path)
    return path.rstrip("/") if is_url(path) else os.path.abspath(os.path.expanduser(path))


def Path(path: str | os.PathLike) -> epath.Path:  # noqa: N802 (a constructor)
    return epath.Path(normalize(path))


def join(base: str | os.PathLike, *parts: str) -> str:
    return os.fspath(epath.Path(os.fspath(base), *parts))


def exists(path: str | os.PathLike) -> bool:
    return Path(path).exists()


def isdir(path: str | os.PathLike) -> bool:
    return Path(path).is_dir()


def makedirs(path: str | os.PathLike) -> None:
    Path(path).mkdir(parents=True, exist_ok=True)


def read_text(path: str | os.PathLike) -> str:
    return Path(path).read_text(encoding="utf-8")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a whole file (object stores replace it in one piece)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text, encoding="utf-8")


def _files(root: epath.Path) -> Iterator[tuple[str, epath.Path]]:
    """(relative path, path) of every file under `root` (fsspec's walk drops the URL
    scheme from the paths it yields, so the relative part is kept from `root`)."""
    top = os.fspath(root)
    for directory, _, files in root.walk():
        d = os.fspath(directory)
        if is_url(top) and not is_url(d):
            d = top.split("://", 1)[0] + "://" + d
        sub = os.path.relpath(d, top)
        for name in files:
            rel = name if sub == "." else os.path.join(sub, name)
            yield rel, epath.Path(top, rel)


def copy_file(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Stream one file between any two filesystems."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with Path(src).open("rb") as fin, dst.open("wb") as fout:
        shutil.copyfileobj(fin, fout, _CHUNK)


def local_copy(path: str, *, cache_dir: str | None = None) -> str:
    """A local directory with the files of directory `path` (the path itself when local).
    URLs are downloaded into `cache_dir` (default `$DSRL_CACHE` or ~/.cache/dsrl_jax/remote);
    a cached file of the same size that is not older than the remote one is kept."""
    if not is_url(path):
        return path
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"no directory at {path}")
    cache = cache_dir or os.environ.get("DSRL_CACHE") or os.path.expanduser("~/.cache/dsrl_jax/remote")
    local = os.path.join(cache, hashlib.sha1(normalize(path).encode()).hexdigest()[:16])
    for rel, src in _files(root):
        dst = os.path.join(local, rel)
        st = src.stat()
        fresh = os.path.exists(dst) and os.path.getsize(dst) == st.length and os.path.getmtime(dst) >= (st.mtime or 0)
        if not fresh:
            copy_file(src, dst + ".part")
            os.replace(dst + ".part", dst)
    os.makedirs(local, exist_ok=True)
    return local


class Staged:
    """A local working copy of a directory that may be remote (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike, *, download: bool = True, exclude: tuple[str, ...] = ()):
        self.target = normalize(directory)
        self.remote = is_url(self.target)
        self.exclude = exclude
        if not self.remote:
            os.makedirs(self.target, exist_ok=True)
            self.local = self.target
            return
        self.local = tempfile.mkdtemp(prefix="dsrl_staged_")
        self._seen: dict[str, tuple[int, int]] = {}
        root = epath.Path(self.target)
        if download and root.is_dir():
            for rel, src in _files(root):
                if not self._excluded(rel):
                    copy_file(src, os.path.join(self.local, rel))
        self._seen = self._snapshot()

    def _excluded(self, rel: str) -> bool:
        return rel.split(os.sep)[0] in self.exclude

    def _snapshot(self) -> dict[str, tuple[int, int]]:
        out = {}
        for directory, _, files in os.walk(self.local):
            for name in files:
                p = os.path.join(directory, name)
                st = os.stat(p)
                out[os.path.relpath(p, self.local)] = (st.st_mtime_ns, st.st_size)
        return out

    def sync(self) -> None:
        """Upload the files that are new or changed since the last sync (remote only)."""
        if not self.remote:
            return
        now = self._snapshot()
        for rel, stamp in now.items():
            if self._seen.get(rel) != stamp and not self._excluded(rel) and not rel.endswith((".tmp", ".part")):
                copy_file(os.path.join(self.local, rel), join(self.target, rel))
        self._seen = now

    def close(self) -> None:
        if self.remote:
            self.sync()
            shutil.rmtree(self.local, ignore_errors=True)


@contextlib.contextmanager
def staged(directory: str | os.PathLike, *, download: bool = True, exclude: tuple[str, ...] = ()) -> Iterator[str]:
    """`with staged(workdir) as local:` write under `local`; it reaches `workdir` on exit
    (also when the block raises, so a resumed job finds what was done)."""
    s = Staged(directory, download=download, exclude=exclude)
    try:
        yield s.local
    finally:
        s.close()
