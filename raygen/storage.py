"""Locations: a local path or a URI (``s3://bucket/prefix``, ``gs://``, ``hdfs://``, ``file://``), on pyarrow.fs.

A *location* is a string. Plain paths stay plain paths (nothing is copied for them); a URI is opened
with :func:`pyarrow.fs.FileSystem.from_uri`, so credentials and the endpoint come from the standard
environment of each filesystem (for S3: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``, ... or the
instance role). Code in a Ray worker receives a location and calls :func:`materialize` to get a local
folder; it never reads a path that exists only on the driver.

Object stores have no folders and no rename: a "folder" here is a key prefix, and the helpers below
copy, list and delete objects under it. The commit protocol on top of them is in raygen.runner.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import uuid
from pathlib import Path

import pyarrow.fs as pafs

log = logging.getLogger("raygen")

_FS_CACHE: dict[tuple, pafs.FileSystem] = {}
_FS_LOCK = threading.Lock()
_ENV_KEYS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_DEFAULT_REGION", "AWS_REGION",
             "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS")


def is_uri(location: str | os.PathLike) -> bool:
    """True for ``scheme://...`` (s3, gs, hdfs, file, ...); False for plain paths (and Path objects)."""
    if isinstance(location, os.PathLike):
        return False
    scheme, sep, _ = str(location).partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1  # "C://x" is a Windows drive, not a URI


def _split_query(location: str) -> tuple[str, str]:
    base, sep, query = location.partition("?")
    return base, sep + query


def filesystem(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """``(filesystem, path inside it)``: pyarrow's ``FileSystem.from_uri`` for a URI (one filesystem object
    per bucket and environment, reused), a LocalFileSystem and the absolute path for a plain path."""
    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(os.fspath(location)))
    location = str(location)
    base, query = _split_query(location)
    scheme, _, rest = base.partition("://")
    key = (scheme, rest.split("/", 1)[0], query, tuple(os.environ.get(k, "") for k in _ENV_KEYS))
    with _FS_LOCK:
        fs = _FS_CACHE.get(key)
    if fs is None:
        fs, _ = pafs.FileSystem.from_uri(location)
        with _FS_LOCK:
            _FS_CACHE[key] = fs
    if isinstance(fs, pafs.LocalFileSystem):
        return fs, pafs.FileSystem.from_uri(location)[1]
    return fs, rest.rstrip("/")  # "bucket/prefix" for object stores (what from_uri answers too)


def clear_cache() -> None:
    """Forget the filesystems built so far (a test's endpoint went away)."""
    with _FS_LOCK:
        _FS_CACHE.clear()


def join(location: str | os.PathLike, *parts: str) -> str:
    """``location/part/...`` for a path or a URI (a URI's ``?query`` stays at the end)."""
    if not is_uri(location):
        return str(Path(location).joinpath(*parts))
    base, query = _split_query(str(location))
    return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)]) + query


def local_path(location: str | os.PathLike) -> Path | None:
    """The local path of a plain path or a ``file://`` URI; None for remote locations."""
    fs, path = filesystem(location)
    return Path(path) if isinstance(fs, pafs.LocalFileSystem) else None


# ----------------------------------------------------------------------------------------- objects

def exists(location: str) -> bool:
    """Whether a file or a non-empty folder (prefix) is at ``location``."""
    fs, path = filesystem(location)
    return fs.get_file_info(path).type != pafs.FileType.NotFound


def is_file(location: str) -> bool:
    fs, path = filesystem(location)
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(location: str) -> bytes:
    """A file's bytes; FileNotFoundError when it is absent."""
    fs, path = filesystem(location)
    try:
        with fs.open_input_stream(path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        if fs.get_file_info(path).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"{location} does not exist") from None
        raise OSError(f"{location}: {e}") from None


def write_bytes(location: str, data: bytes) -> None:
    """Write a file; an object store's PUT is atomic, a local file is written beside and renamed."""
    fs, path = filesystem(location)
    if isinstance(fs, pafs.LocalFileSystem):
        from raygen.io import atomic_path

        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
        return
    with fs.open_output_stream(path) as f:
        f.write(data)


def delete_file(location: str) -> None:
    """Delete one file; nothing when it is already gone."""
    fs, path = filesystem(location)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def list_files(location: str) -> list[str]:
    """Paths (relative to ``location``, ``/``-separated, sorted) of every file under the folder ``location``."""
    fs, root = filesystem(location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    except NotADirectoryError:
        return []
    root = root.rstrip("/") + "/"
    return sorted(i.path[len(root):] for i in infos if i.type == pafs.FileType.File and i.path.startswith(root))


def delete_folder(location: str) -> None:
    """Delete a folder (prefix) and everything under it; nothing when it is absent. Callers delete only
    what raygen wrote (see raygen.runner's STAGE_MARKER rule)."""
    fs, path = filesystem(location)
    if fs.get_file_info(path).type == pafs.FileType.NotFound:
        return
    fs.delete_dir(path)


def copy_folder(src: str, dst: str) -> int:
    """Copy every file under ``src`` to the same relative path under ``dst`` (both on one filesystem:
    object stores copy server-side); returns the number of files."""
    sfs, spath = filesystem(src)
    dfs, dpath = filesystem(dst)
    files = list_files(src)
    same = type(sfs) is type(dfs) and sfs.equals(dfs)
    for rel in files:
        if same:
            if isinstance(dfs, pafs.LocalFileSystem):
                dfs.create_dir(os.path.dirname(f"{dpath}/{rel}"), recursive=True)
            dfs.copy_file(f"{spath}/{rel}", f"{dpath}/{rel}")
        else:
            pafs.copy_files(f"{spath}/{rel}", f"{dpath}/{rel}", source_filesystem=sfs, destination_filesystem=dfs)
    return len(files)


def upload_folder(local_dir: str | Path, location: str, exclude: tuple[str, ...] = ()) -> int:
    """Copy the local folder ``local_dir`` to ``location`` (files under their relative paths; symlinks
    followed); files named in ``exclude`` (relative paths) are left out. Returns the number of files."""
    dfs, dpath = filesystem(location)
    local_dir = Path(local_dir)
    n = 0
    for f in sorted(p for p in local_dir.rglob("*") if p.is_file()):
        rel = f.relative_to(local_dir).as_posix()
        if rel in exclude:
            continue
        if isinstance(dfs, pafs.LocalFileSystem):
            dfs.create_dir(os.path.dirname(f"{dpath}/{rel}"), recursive=True)
        pafs.copy_files(str(f), f"{dpath}/{rel}", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=dfs)
        n += 1
    return n


def download_folder(location: str, local_dir: str | Path) -> int:
    """Copy every file under ``location`` into the local folder ``local_dir`` (created); returns the count."""
    sfs, spath = filesystem(location)
    local_dir = Path(local_dir)
    files = list_files(location)
    for rel in files:
        (local_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        pafs.copy_files(f"{spath}/{rel}", str(local_dir / rel), source_filesystem=sfs,
                        destination_filesystem=pafs.LocalFileSystem())
    return len(files)


# ------------------------------------------------------------------------------------- materialize

def mirror_root() -> Path:
    """The node-local cache of downloaded folders: ``$RAYGEN_CACHE/mirror``."""
    from raygen.models import cache_dir

    return cache_dir() / "mirror"


def materialize(location: str | os.PathLike, key: str | None = None) -> Path:
    """A local folder holding ``location``: a plain path (or ``file://`` URI) as is; a remote folder is
    downloaded once per node into ``$RAYGEN_CACHE/mirror/<sha1(location)>[-<key>]/`` (into a temporary
    folder renamed into place, so concurrent callers on one node never see half a copy) and that folder
    returned. ``key`` names the content (e.g. a stage key): a new key downloads afresh, while without a
    key a folder already cached is reused as is. Callable from any Ray worker on any node."""
    local = local_path(location)
    if local is not None:
        return local
    name = hashlib.sha1(str(location).encode()).hexdigest() + (f"-{key}" if key else "")
    final = mirror_root() / name
    if final.is_dir():
        return final
    if not exists(str(location)):
        raise FileNotFoundError(f"{location} does not exist (nothing to download)")
    tmp = final.parent / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        n = download_folder(str(location), tmp)
        log.info("materialized %s (%d files) in %s", location, n, final)
        try:
            os.rename(tmp, final)
        except OSError:  # another process on this node finished first: use its copy
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
