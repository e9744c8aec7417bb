"""The one owner of every file onnxplain writes: checked before any work, written all or nothing.

A run opens an :class:`Outputs` transaction, names what it reads (:meth:`Outputs.protect`: the
model, every external-data file the model references, images, arrays, rule files) and what it
will write (:meth:`Outputs.folder`, :meth:`Outputs.file`), and calls :meth:`Outputs.check` before
the expensive work. The check refuses, with one line, an output that is an input or a file an input
model references, a directory, a path under a file, a folder that cannot be written, a name longer
than the file system allows and, where the size can be estimated, an output that does not fit on
the disk. Writers then stage each file in a temporary file created with ``O_EXCL`` in the target
folder (:func:`tempfile.mkstemp`: unpredictable name, never follows a planted symlink); when the
transaction ends without error every temporary file is renamed into place (``os.replace``, atomic
per file), otherwise (an error, Ctrl-C) every one is removed, with the folders the run created.

Outside a transaction :func:`write_atomic` is a transaction of one file, so the API's writers
(``save_png``, ``save_npy``, ``save_text``, ``save_model_atomic``) have the same guarantees.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from onnxplain.errors import OnnxplainError, os_message

_ACTIVE: contextvars.ContextVar[Outputs | None] = contextvars.ContextVar("onnxplain_outputs", default=None)
TEMP_PREFIX = ".onnxplain-"


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def active() -> Outputs | None:
    """The transaction of the running command, if any."""
    return _ACTIVE.get()


def model_references(path: Path) -> list[Path]:
    """The files an ONNX model file refers to (external-data locations), resolved beside it.

    Read without loading weights; a file that is not a readable model refers to nothing."""
    import onnx
    from onnx import external_data_helper

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 -- not a model: the loader reports that, this only protects files
        return []
    refs = []
    for t in external_data_helper._get_all_tensors(model):
        if external_data_helper.uses_external_data(t):
            loc = next((e.value for e in t.external_data if e.key == "location"), "")
            if loc and "\0" not in loc:
                refs.append(path.parent / loc)
    return refs


def _identity(path: Path):
    try:
        st = os.stat(path)
        return st.st_dev, st.st_ino
    except (OSError, ValueError):
        return None


def _resolved(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except (OSError, ValueError):
        return Path(os.path.abspath(path))


def _existing_ancestor(path: Path) -> Path:
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


class Outputs:
    """A set of output files written together (see the module docstring).

    >>> with Outputs(protect=[model]) as out:
    ...     out.folder(out_dir, "--out-dir").file(out_dir / "a.png", size=10_000).check()
    ...     out.write(out_dir / "a.png", lambda f: f.write(data))
    """

    def __init__(self, protect: Iterable = (), models: Iterable = ()):
        self._protected: list[tuple[Path, object, Path]] = []  # (given, (dev, ino) or None, resolved)
        self._folders: list[tuple[Path, str]] = []
        self._files: dict[Path, int] = {}
        self._staged: list[tuple[Path, Path]] = []  # (temporary, final)
        self._made: list[Path] = []  # folders this transaction created, deepest last
        self._absent: list[Path] = []  # planned folders missing when planned: removed on failure (if empty)
        self._token = None
        for p in protect:
            self.protect(p)
        for m in models:
            self.protect(m, model=True)

    # ---- inputs ------------------------------------------------------------------------------------
    def protect(self, path, model: bool = False) -> Outputs:
        """Never write ``path`` (nor, for a model, any file it references)."""
        if path is None:
            return self
        p = Path(path)
        self._protected.append((p, _identity(p), _resolved(p)))
        if model and p.is_file():
            for ref in model_references(p):
                self._protected.append((ref, _identity(ref), _resolved(ref)))
        return self

    def _clash(self, path: Path) -> Path | None:
        ident, real = _identity(path), _resolved(path)
        for given, pid, preal in self._protected:
            if (ident is not None and ident == pid) or real == preal:
                return given
        return None

    # ---- plan and check -----------------------------------------------------------------------------
    def folder(self, path, flag: str = "--out-dir") -> Outputs:
        """An output folder (made when the first file is written, removed again if the run fails)."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise OnnxplainError(f"{flag} {p} exists and is not a folder")
        self._folders.append((p, flag))
        self._absent.extend(q for q in _missing_parents(p) if q not in self._absent)
        return self

    def file(self, path, size: int = 0, flag: str | None = None) -> Outputs:
        """A file the run will write, ``size`` its expected bytes (0: unknown)."""
        p = Path(path)
        self._check_file(p, flag)
        self._files[p] = max(int(size), 0)
        self._absent.extend(q for q in _missing_parents(p.parent) if q not in self._absent)
        return self

    def _check_file(self, p: Path, flag: str | None = None) -> None:
        what = f"{flag} {p}" if flag else f"output {p}"
        if "\0" in str(p):
            raise OnnxplainError(f"{what}: a file name cannot contain a NUL character")
        if p.is_dir():
            raise OnnxplainError(f"{what} is a directory; give a file name")
        clash = self._clash(p)
        if clash is not None:
            raise OnnxplainError(f"refusing to overwrite the input file {clash} with {p}; choose another output")
        anc = _existing_ancestor(p.parent)
        if not anc.is_dir():
            raise OnnxplainError(f"{what}: {anc} is not a folder")
        limit = _name_max(anc)
        for part in (p.name, *[q.name for q in _missing_parents(p.parent)]):
            if len(os.fsencode(part)) > limit:
                raise OnnxplainError(
                    f"{what}: the name '{part[:40]}...' is too long for this file system (at most {limit} bytes)"
                )

    def check(self) -> Outputs:
        """Every planned folder and file can be written, and the files fit on their disks."""
        for p, flag in self._folders:
            if p.exists() and not p.is_dir():
                raise OnnxplainError(f"{flag} {p} exists and is not a folder")
            if "\0" in str(p):
                raise OnnxplainError(f"{flag}: a folder name cannot contain a NUL character")
            anc = _existing_ancestor(p)
            if not anc.is_dir():
                raise OnnxplainError(f"{flag} {p}: {anc} is not a folder")
            limit = _name_max(anc)
            for q in _missing_parents(p):
                if len(os.fsencode(q.name)) > limit:
                    raise OnnxplainError(f"{flag} {p}: the name '{q.name[:40]}...' is too long for this file system")
        for p in self._files:
            self._check_file(p)
        by_disk: dict = {}
        for p in [f for f, _ in self._folders] + [f.parent for f in self._files]:
            anc = _existing_ancestor(p)
            by_disk.setdefault(anc, 0)
        for f, size in self._files.items():
            by_disk[_existing_ancestor(f.parent)] += size
        for anc, need in by_disk.items():
            _probe(anc)
            if need:
                try:
                    free = shutil.disk_usage(anc).free
                except OSError:
                    continue
                if need > free:
                    raise OnnxplainError(
                        f"not enough free space in {anc}: the outputs need about "
                        f"{_human(need)}, {_human(free)} are free"
                    )
        return self

    # ---- writing -------------------------------------------------------------------------------------
    def _make_folder(self, folder: Path) -> None:
        missing = _missing_parents(folder)
        for q in reversed(missing):
            try:
                q.mkdir()
            except FileExistsError:
                if not q.is_dir():
                    raise OnnxplainError(f"cannot create folder {q}: a file of that name exists") from None
                continue
            except OSError as exc:
                raise OnnxplainError(f"cannot create folder {q}: {os_message(exc)}") from None
            self._made.append(q)

    def temp(self, path, suffix: str = ".tmp") -> Path:
        """A new empty temporary file beside ``path`` (O_EXCL), renamed to ``path`` on commit."""
        p = Path(path)
        self._check_file(p)
        self._make_folder(p.parent)
        try:
            fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=p.parent)
        except OSError as exc:
            raise OnnxplainError(f"cannot write {p}: {os_message(exc)}") from None
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666 & ~_UMASK)  # the mode an ordinary new file gets (mkstemp makes 0600)
        os.close(fd)
        tmp = Path(name)
        self._staged.append((tmp, p))
        return tmp

    def write(self, path, writer: Callable) -> Path:
        """Stage ``path``: ``writer(f)`` writes into a binary file object; renamed on commit."""
        p = Path(path)
        tmp = self.temp(p)
        try:
            with open(tmp, "r+b") as f:
                writer(f)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise OnnxplainError(f"cannot write {p}: {os_message(exc)}") from None
        return p

    def commit(self) -> list[Path]:
        """Rename every staged file into place (protected paths checked again first)."""
        for _, final in self._staged:
            clash = self._clash(final)
            if clash is not None:
                raise OnnxplainError(f"refusing to overwrite the input file {clash}; choose another output")
        done = []
        for tmp, final in self._staged:
            try:
                os.replace(tmp, final)
            except OSError as exc:
                raise OnnxplainError(f"cannot write {final}: {os_message(exc)}") from None
            done.append(final)
        self._staged = []
        self._made = []
        self._absent = []
        return done

    def rollback(self) -> None:
        """Remove every staged temporary file and every folder this transaction made (if empty)."""
        for tmp, _ in self._staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self._staged = []
        for q in list(reversed(self._made)) + self._absent:  # deepest first
            with contextlib.suppress(OSError):
                q.rmdir()
        self._made = []

    # ---- the transaction --------------------------------------------------------------------------------
    def __enter__(self) -> Outputs:
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        try:
            if kind is None:
                try:
                    self.commit()
                except BaseException:
                    self.rollback()
                    raise
            else:
                self.rollback()
        finally:
            if self._token is not None:
                _ACTIVE.reset(self._token)
                self._token = None
        return False


def _missing_parents(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    out, q = [], Path(folder)
    while not q.exists() and q != q.parent:
        out.append(q)
        q = q.parent
    return out


def _probe(folder: Path) -> None:
    """Create and remove a file in ``folder``: the one reliable test of writability (ACLs, read-only mounts)."""
    try:
        fd, name = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".probe", dir=folder)
    except OSError as exc:
        exc.filename = None  # the probe's name means nothing to the user
        raise OnnxplainError(f"cannot write in {folder}: {os_message(exc)}") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def write_atomic(path, write: Callable, suffix: str = "") -> Path:
    """Write ``path`` with ``write(f)`` (a binary file object) through the running transaction, or as a
    transaction of its own: a crash or error leaves no file and no temporary file behind.
    (``suffix`` is accepted for older callers and ignored: writers get a file object.)"""
    tx = active()
    if tx is not None:
        return tx.write(path, write)
    with Outputs() as tx:
        tx.file(path)
        tx.write(path, write)
    return Path(path)


__all__ = ["Outputs", "active", "model_references", "write_atomic", "TEMP_PREFIX"]
