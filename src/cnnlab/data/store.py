"""cnnlab's cache folder, and decoded image arrays kept there: in memory when they fit, memory-mapped when not.

The cache folder is ``$CNNLAB_CACHE``, else ``~/.cache/cnnlab``: downloads go into ``<cache>/<dataset>``, decoded
image folders into ``<cache>/folders``. It is the only place cnnlab creates data files.

Datasets larger than memory: a decoded set whose bytes exceed :func:`in_memory_limit` (half the RAM this process may
use: the machine's, or its container's or job's limit where that is lower) is written to a raw uint8 file in the cache
and mapped from it (``torch.from_file``, copy-on-write), so the pages are read on demand and the kernel may drop them
again; :class:`~cnnlab.data.loader.DeviceLoader` then gathers each batch on the host and moves only that batch to the
device (:func:`is_memory_mapped`). 100,000 RGB images at 224 px are 15 GB of uint8: such a set trains from the page
cache instead of failing to load.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import math
import os
import shutil
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from cnnlab.errors import DataError
from cnnlab.io import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: a killed writer's temporary file cannot be told from a live one's, and is left
    fcntl = None

__all__ = ["CACHE_ENV", "cache_root", "in_memory_limit", "cgroup_memory_limit", "is_memory_mapped", "write_raw",
           "open_raw", "mapped_reads", "format_bytes", "joined"]

CACHE_ENV = "CNNLAB_CACHE"
IN_MEMORY_BYTES: int | None = None  # None: half the physical memory (tests set a small number)

# Where the control group's memory limit is read (moved by the tests).
PROC_CGROUP, CGROUP_ROOT = Path("/proc/self/cgroup"), Path("/sys/fs/cgroup")

_MAPPED: dict[int, int] = {}  # data_ptr of each mapped storage -> its size in bytes
# Inside mapped_reads(), in this thread alone: the explorer reads a run's images in its worker threads while another
# thread may load a set to train on, which is to be read into memory as ever.
_MAP_EVERY_ARRAY: contextvars.ContextVar[bool] = contextvars.ContextVar("map_every_array", default=False)


def cache_root() -> Path:
    """``$CNNLAB_CACHE`` if set and non-empty, else ``~/.cache/cnnlab``."""
    env = os.environ.get(CACHE_ENV, "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnlab"


def in_memory_limit() -> int:
    """Largest decoded dataset, in bytes, that is held in memory rather than memory-mapped from the cache: half the
    memory this process may use, the machine's or its control group's limit where that is lower."""
    if IN_MEMORY_BYTES is not None:
        return IN_MEMORY_BYTES
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not POSIX: assume 8 GB of RAM
        physical = 8 << 30
    return min(physical, cgroup_memory_limit() or physical) // 2


def cgroup_memory_limit() -> int | None:
    """The memory limit of this process's control group (a container's, a Slurm or Kubernetes job's), in bytes, or
    None where there is none or it cannot be read.

    Half the machine's RAM was the limit whatever the container was allowed: a 12 GB set on a 64 GB machine was read
    into a container of 8 GB, which the kernel then killed. cgroup v2 keeps the limit in ``memory.max`` ("max": none),
    v1 in ``memory.limit_in_bytes`` (a huge number: none); a container sees its own group as the root.
    """
    try:
        lines = Path(PROC_CGROUP).read_text().splitlines()
    except OSError:
        return None
    candidates = []
    for line in lines:  # "hierarchy-id:controllers:/group"
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, group = parts
        group = group.lstrip("/")
        if controllers == "":  # v2: one hierarchy
            candidates += [CGROUP_ROOT / group / "memory.max", CGROUP_ROOT / "memory.max"]
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            candidates += [CGROUP_ROOT / "memory" / group / "memory.limit_in_bytes",
                           CGROUP_ROOT / "memory" / "memory.limit_in_bytes"]
    limits = []
    for path in candidates:
        try:
            text = path.read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            limits.append(int(text))
    return min(limits) if limits else None


def format_bytes(n: int) -> str:
    """``15.1 GB`` style (powers of 1000, as disk sizes are quoted)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def is_memory_mapped(tensor: torch.Tensor) -> bool:
    """True for a tensor (or a view of one) that :func:`open_raw` mapped from a file."""
    return tensor.device.type == "cpu" and tensor.untyped_storage().data_ptr() in _MAPPED


def write_raw(path: Path, nbytes: int, fill: Callable[[np.ndarray], int]) -> int:
    """Create ``path`` atomically as ``nbytes`` of zeros that ``fill(array)`` writes into; returns the bytes kept.

    ``fill`` gets a writable uint8 memory map of the whole file and returns how many leading bytes it used; the
    file is cut to that length before it is moved into place, so a killed write leaves no partial file behind, only
    its hidden temporary file, which the next write of ``path`` removes (:func:`_remove_abandoned`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(path)
    free = shutil.disk_usage(path.parent).free
    if nbytes > free:
        raise DataError(f"decoding needs {format_bytes(nbytes)} in the cache folder {path.parent}, which has "
                        f"{format_bytes(free)} free; pass a smaller --image-size or set {CACHE_ENV} to a larger disk")
    used = 0
    held = contextlib.ExitStack()  # the temporary file, open and locked until it is in place

    def write(tmp: str) -> None:
        nonlocal used
        f = held.enter_context(open(tmp, "r+b"))
        if fcntl is not None:
            # this writer is alive: another process's write_raw leaves the file alone; on a file system without
            # locks the write goes on unlocked (and no process can lock a file there to remove it)
            with contextlib.suppress(OSError):
                fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(max(nbytes, 1))  # sparse until written; np.memmap refuses empty files
        array = np.memmap(tmp, dtype=np.uint8, mode="r+", shape=(max(nbytes, 1),))
        try:
            used = fill(array)
            array.flush()
        finally:
            del array
        os.truncate(tmp, used)

    with held:
        atomic_write(path, write)
    return used


def _remove_abandoned(path: Path) -> None:
    """Delete the temporary files of ``path`` (:func:`cnnlab.io.atomic_write`'s ``.NAME.RANDOM.tmp``) whose writer
    was killed (SIGKILL, the OOM killer) in the middle of a folder's first decode.

    Such a file, the size of the images decoded before the kill, stayed for good: the next run decodes the folder
    whole and no later one decodes it again. A live writer holds its file locked from before it has any bytes until
    it is in place, so a file that is unlocked and not empty is a dead writer's; an empty one may be a live writer's
    that has not locked it yet, and is left (it costs nothing).
    """
    if fcntl is None:
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            with open(tmp, "rb") as f:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if os.fstat(f.fileno()).st_size:
                    tmp.unlink()
        except OSError:  # locked by a live writer (BlockingIOError), or gone meanwhile
            continue


@contextlib.contextmanager
def mapped_reads() -> Iterator[None]:
    """Inside it, :func:`open_raw` maps every array, whatever its size: for a reader of part of a set (a checkpoint's
    test split, the digests of its training images), a load into memory is a copy of the rest it never reads (eval of
    a run's 600 MB folder read all of it to score its 100 MB test split)."""
    token = _MAP_EVERY_ARRAY.set(True)
    try:
        yield
    finally:
        _MAP_EVERY_ARRAY.reset(token)


def open_raw(path: Path, shape: tuple[int, ...], *, mapped: bool | None = None) -> torch.Tensor:
    """The uint8 tensor of ``shape`` stored in ``path``: read into memory, or mapped when it is over the limit.

    Args:
        path: a file written by :func:`write_raw`.
        shape: its layout; the file must hold exactly ``prod(shape)`` bytes.
        mapped: force the choice; ``None`` maps only when the size exceeds :func:`in_memory_limit` (always inside
            :func:`mapped_reads`).
    """
    nbytes = math.prod(shape)
    size = path.stat().st_size
    if size != nbytes:
        raise DataError(f"{path}: cached array has {size} bytes, expected {nbytes} for shape {shape}")
    if mapped is None:
        mapped = _MAP_EVERY_ARRAY.get() or nbytes > in_memory_limit()
    if not mapped or nbytes == 0:
        return torch.from_numpy(np.fromfile(path, dtype=np.uint8, count=nbytes)).view(shape)
    # shared=False maps the file copy-on-write: pages load on demand and a stray write never reaches the cache.
    root = torch.from_file(str(path), shared=False, size=nbytes, dtype=torch.uint8)
    key = root.untyped_storage().data_ptr()
    _MAPPED[key] = nbytes
    # Every view keeps its base tensor alive, so the entry goes exactly when the mapping is unmapped.
    weakref.finalize(root, _MAPPED.pop, key, None)
    return root.view(shape)


def joined(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """``first`` then ``second`` along the first axis: a view of their storage where ``second`` follows ``first``
    there (a folder's splits, stored in one array by :func:`write_raw`), else a copy (``torch.cat``).

    A folder scored whole was copied into one tensor: twice its decoded bytes in memory, and a memory-mapped set
    read whole into it.
    """
    if first.is_contiguous() and second.is_contiguous() and first.dtype == second.dtype and \
            first.device == second.device and first.shape[1:] == second.shape[1:] and \
            first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr() and \
            second.storage_offset() == first.storage_offset() + first.numel():
        return first.as_strided((len(first) + len(second), *first.shape[1:]), first.stride())
    return torch.cat([first, second])
