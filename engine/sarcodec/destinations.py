"""Where the tool may write: one destination check, short temporary names and one atomic publish.

Every file the tool writes for a user (the ``-o`` output, a ``--weight-map`` GeoTIFF, the Cloud
Optimized GeoTIFF, rank 0's merged output under torchrun) passes the same two gates:

- :func:`check_destination`, before any work: the path is not a folder, not a device node, FIFO or
  socket (``-o /dev/null --overwrite`` used to replace ``/dev/null`` with a regular file), not one
  of the run's inputs (``--weight-map scene.tif`` used to replace the scene), not already written by
  this run, and not an existing file unless ``--overwrite`` was given.
- :func:`publish`, at the end: fsync the finished temporary file and move it into place. Without
  ``--overwrite`` the move is ``os.link`` (which fails if the name exists) followed by removing the
  temporary name, so two runs writing the same new file cannot both "succeed" with one result
  silently lost: the second gets exit 1. With ``--overwrite`` it is ``os.replace``.

The check registers the ``--overwrite`` decision for its path, so the writers deep in the engine
(``ContainerWriter``, ``GeoTiffSink``) apply the user's choice without every layer in between
passing a flag; a path nobody checked (library use, the QGIS plugin, whose file dialog has already
asked) is replaced, as before.

:func:`publish` also remembers which file it put in place (device and inode of the temporary file),
so after a signal the CLI can tell, by looking at the destination, whether the new file is already
there (exit 0) or the previous one is untouched (exit 130): a Ctrl-C landing between the rename and
the end of the run can no longer claim the old file survived.

Temporary names are ``.<name>.<random>.<suffix>`` with ``<name>`` shortened so the whole stays within
the 255-byte file name limit: a 255-byte output name works.

Every temporary file :func:`make_temp` creates is recorded in the same step (an interrupt cannot fall
between the two, see ``sarcodec.interrupts``). Its owner removes it; :func:`remove_temporaries` is the
net under that for the end of an interrupted command-line run: a Ctrl-C that lands between a
constructor's return and its caller's ``try`` would otherwise leave a hidden ``.part`` file behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import InputFileError, UsageError
from .interrupts import deferred

NAME_MAX = 255  # bytes per file name on every filesystem we write to (ext4, xfs, btrfs, tmpfs, NTFS)
_RANDOM_LEN = 8  # what tempfile.mkstemp puts between prefix and suffix

# path -> --overwrite, as decided by check_destination (see module docstring)
_overwrite_policy: dict[str, bool] = {}
# path -> (st_dev, st_ino) of the temporary file publish moved (or is moving) there
_published: dict[str, tuple[int, int]] = {}
# main destination -> the companion files (its --weight-map) published only after it, see hold_until
_companions: dict[str, list[str]] = {}
# companion -> its finished temporary file, waiting for the main destination's publish
_held: dict[str, str] = {}
# every temporary file make_temp created in this process, until remove_temporaries (or pruned once gone)
_temporaries: set[str] = set()
_PRUNE_AT = 256


def _key(path: str | os.PathLike[str]) -> str:
    return os.path.abspath(os.fspath(path))


def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words; None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _refuse_non_regular(path: str | os.PathLike[str], shown: str) -> bool:
    """Raise when ``path`` exists and is not a regular file (links followed); True when it exists."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return os.path.lexists(path)  # a dangling symlink still occupies the name
    except OSError as exc:
        raise InputFileError(f"{shown}: cannot check the output: {exc.strerror or exc}") from None
    kind = _kind_of(st.st_mode)
    if kind == "a folder":
        raise InputFileError(f"{shown}: is a folder")
    if kind is not None:
        raise InputFileError(f"{shown}: is {kind}, not a regular file; sarcodec writes regular files only "
                             "(use -o - to write standard output)")
    return True


def _same_file(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return _key(a) == _key(b)


def check_destination(path: str | os.PathLike[str], *, overwrite: bool, inputs: Iterable[str] = (),
                      taken: set[str] | None = None, what: str = "output") -> None:
    """Refuse a destination before any work; on success remember ``overwrite`` for :func:`publish`.

    ``inputs`` are every file the run reads (rasters, containers, the model checkpoint); ``taken``
    collects the destinations of the run so far (two outputs of one run never share a name).
    Errors: ``UsageError`` (exit 4) for an output that is one of the inputs, ``InputFileError``
    (exit 1) for the rest. ``what`` names the option in messages ("output", "weight map").
    """
    shown = os.fspath(path)
    key = _key(path)
    if taken is not None:
        if key in taken:
            raise InputFileError(f"{shown}: already written by an earlier input of this run "
                                 "(or by this input as both output and weight map)")
        taken.add(key)
    exists = check_writable(path, inputs=inputs, what=what)
    if exists and not overwrite:
        raise InputFileError(f"{shown}: exists (use --overwrite to replace it)")
    parent = Path(shown).parent
    if not parent.is_dir():
        raise InputFileError(f"{shown}: folder {parent} does not exist")
    _overwrite_policy[key] = overwrite


def check_writable(path: str | os.PathLike[str], *, inputs: Iterable[str | os.PathLike[str] | None] = (),
                   what: str = "output") -> bool:
    """The part of the check every front end needs, whatever its overwrite rule: not an input, not a
    folder, device, FIFO or socket. Returns whether ``path`` exists. Registers nothing.

    The engine's entry points call this (so the QGIS plugin, whose file dialog has already asked
    about replacing, cannot replace its own input either); the CLI calls :func:`check_destination`.
    """
    shown = os.fspath(path)
    for source in inputs:
        source = os.fspath(source) if source is not None else ""
        if source and not source.startswith("/vsi") and _same_file(source, path):
            raise UsageError(f"{shown}: the {what} would replace its own input {source}; choose another name")
    return _refuse_non_regular(path, shown)


def forget(paths: Iterable[str | os.PathLike[str]]) -> None:
    """Drop what :func:`check_destination` and :func:`publish` remembered about ``paths``."""
    for p in paths:
        _overwrite_policy.pop(_key(p), None)
        _published.pop(_key(p), None)


def was_published(path: str | os.PathLike[str]) -> bool:
    """Whether the file now at ``path`` is the one :func:`publish` put there (not a previous one)."""
    ident = _published.get(_key(path))
    if ident is None:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == ident


def temp_prefix(destination: str | os.PathLike[str], suffix: str) -> str:
    """``.<name>.`` with ``<name>`` cut so that prefix, random part and ``suffix`` fit in NAME_MAX bytes."""
    raw = os.fsencode(Path(os.fspath(destination)).name)
    budget = max(NAME_MAX - 2 - _RANDOM_LEN - len(os.fsencode(suffix)), 0)
    if len(raw) > budget:
        cut = raw[:budget]
        with contextlib.suppress(UnicodeDecodeError):
            raw.decode("utf-8")  # a UTF-8 name is cut on a character boundary, not mid-character
            cut = cut.decode("utf-8", "ignore").encode("utf-8")
        raw = cut
    return "." + os.fsdecode(raw) + "."


def make_temp(destination: str | os.PathLike[str], suffix: str = ".part",
              folder: str | os.PathLike[str] | None = None) -> tuple[int, str]:
    """A fresh hidden temporary file for ``destination`` (in its folder unless ``folder``): (fd, path).

    Mode is what a new file gets under the umask (mkstemp's 0600 would otherwise survive the rename).
    """
    dest = Path(os.fspath(destination))
    where = os.fspath(folder) if folder is not None else (str(dest.parent) if str(dest.parent) else ".")
    if len(_temporaries) >= _PRUNE_AT:  # a long-lived process (QGIS, a soak run): forget removed ones
        _temporaries.difference_update([t for t in list(_temporaries) if not os.path.lexists(t)])
    try:
        with deferred():
            fd, name = tempfile.mkstemp(prefix=temp_prefix(dest, suffix), suffix=suffix, dir=where)
            _temporaries.add(name)
    except OSError as exc:
        raise InputFileError(f"cannot write to {where}: {exc.strerror or exc}") from exc
    umask = os.umask(0)
    os.umask(umask)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~umask)
    return fd, name


def remove_temporaries() -> list[str]:
    """Remove every temporary file :func:`make_temp` created that still exists; return their paths.

    For the end of an interrupted command-line run, after the engine's own cleanup: whatever is
    left then is a file an interrupt separated from its owner. Not for a process that runs several
    jobs at once (the QGIS plugin's workers never call it).
    """
    removed = []
    for name in sorted(_temporaries):
        try:
            os.unlink(name)
        except OSError:  # removed by its owner (the usual case), or published under its final name
            continue
        removed.append(name)
    _temporaries.clear()
    return removed


def hold_until(companion: str | os.PathLike[str], main: str | os.PathLike[str]) -> None:
    """Publish ``companion`` (a ``--weight-map``) only once ``main`` (the output it belongs to) is published.

    The engine finishes the weight map first (it is written while the first band is coded); published
    then, a run that failed afterwards left a new weight map beside the old output. Now its
    :func:`publish` only keeps the finished temporary file, and ``main``'s publish moves it into place
    right after its own rename. If ``main`` is never published, :func:`discard_held` removes it.
    """
    _companions.setdefault(_key(main), []).append(_key(companion))


def discard_held() -> list[str]:
    """Forget every hold; remove the temporary files of companions whose output was never published."""
    removed = []
    for tmp in _held.values():
        try:
            os.unlink(tmp)
        except OSError:
            continue
        removed.append(tmp)
    _held.clear()
    _companions.clear()
    return removed


def _is_held(key: str) -> bool:
    return any(key in companions for companions in _companions.values())


def publish(tmp: str | os.PathLike[str], destination: str | os.PathLike[str], *,
            overwrite: bool | None = None) -> None:
    """fsync ``tmp`` and move it onto ``destination`` atomically; the destination is old or new, never half.

    ``overwrite`` None: what :func:`check_destination` decided for this path (replace if unchecked).
    Without overwrite an existing destination, even one that appeared while the run was working,
    is never replaced: ``InputFileError`` (exit 1), ``tmp`` left for the caller to remove.
    A companion (:func:`hold_until`) waits, as ``tmp``, for its main destination's publish.
    """
    shown = os.fspath(destination)
    key = _key(destination)
    if _is_held(key):
        _held[key] = os.fspath(tmp)
        return
    companions = _companions.pop(key, [])
    # With companions, a signal waits until they are in place too: output and weight map, or neither.
    with deferred() if companions else contextlib.nullcontext():
        _publish_now(tmp, destination, shown, key, overwrite)
        for companion in companions:  # the output is in place: now its weight map may follow
            held = _held.pop(companion, None)
            if held is not None:
                try:
                    _publish_now(held, companion, companion, companion, None)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(held)
                    raise


def _publish_now(tmp: str | os.PathLike[str], destination: str | os.PathLike[str], shown: str, key: str,
                 overwrite: bool | None) -> None:
    replace = _overwrite_policy.get(key, True) if overwrite is None else overwrite
    try:
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
            st = os.fstat(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InputFileError(f"cannot write {shown}: {exc.strerror or exc}") from exc
    _refuse_non_regular(destination, shown)  # it may have become a device or FIFO since the check
    _published[key] = (st.st_dev, st.st_ino)
    try:
        if replace:
            os.replace(tmp, destination)
        else:
            _link_no_replace(tmp, destination, shown)
    except OSError as exc:
        _published.pop(key, None)
        raise InputFileError(f"cannot write {shown}: {exc.strerror or exc}") from exc
    except BaseException:
        if not was_published(destination):
            _published.pop(key, None)
        raise
    _fsync_dir(os.path.dirname(os.path.abspath(shown)))


def _link_no_replace(tmp: str | os.PathLike[str], destination: str | os.PathLike[str], shown: str) -> None:
    try:
        os.link(tmp, destination)
    except FileExistsError:
        raise InputFileError(f"{shown}: appeared while this run was writing it (another run?); it was not "
                             "replaced (use --overwrite to replace it)") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            raise
        # No hard links here (FAT, some network filesystems): claim the name exclusively, then replace
        # the empty placeholder; a crash in between leaves an empty file, never a replaced one.
        try:
            os.close(os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise InputFileError(f"{shown}: appeared while this run was writing it (another run?); it was "
                                 "not replaced (use --overwrite to replace it)") from None
        os.replace(tmp, destination)
        return
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _fsync_dir(folder: str) -> None:
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


__all__ = ["NAME_MAX", "check_destination", "check_writable", "discard_held", "forget", "hold_until", "make_temp",
           "publish", "remove_temporaries", "temp_prefix", "was_published"]
