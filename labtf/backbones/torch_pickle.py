"""Read PyTorch ``.pth`` state dicts into numpy arrays, without torch.

Formats: the legacy stream (before torch 1.6, or ``_use_new_zipfile_serialization
=False``): magic-number, protocol-version and sys-info pickles, the object
pickle whose persistent ids name storages, the list of storage keys, then per
storage an int64 little-endian element count and its raw bytes; and the zip
archive (``<root>/data.pkl`` + ``<root>/data/<key>``). The object pickle is read
by a restricted unpickler: only the globals a plain state dict needs resolve
(to numpy-backed stand-ins); any other, e.g. ``os.system``, raises LabtfError.
"""

from __future__ import annotations

import collections
import logging
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np

from labtf.errors import LabtfError

logger = logging.getLogger(__name__)

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_STORAGE_DTYPES: dict[str, np.dtype] = {
    name: np.dtype(dt).newbyteorder("<")
    for name, dt in {
        "DoubleStorage": np.float64, "FloatStorage": np.float32,
        "HalfStorage": np.float16, "BFloat16Storage": np.uint16,
        "LongStorage": np.int64, "IntStorage": np.int32,
        "ShortStorage": np.int16, "CharStorage": np.int8,
        "ByteStorage": np.uint8, "BoolStorage": np.bool_,
    }.items()
}


class _Sealed:
    """Stand-ins refuse pickle BUILD, so a crafted file cannot rewrite them."""

    def __setstate__(self, state: Any) -> None:
        raise pickle.UnpicklingError("state set on a tensor/storage stand-in")


class _StorageType(_Sealed):
    """Stand-in for ``torch.FloatStorage`` and friends: just a dtype."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.dtype = _STORAGE_DTYPES[name]


class _Storage(_Sealed):
    """A storage whose bytes are filled in after the object pickle is read."""

    def __init__(self, stype: _StorageType, numel: int) -> None:
        self.stype = stype
        self.numel = int(numel)
        self.data: np.ndarray | None = None


class _LazyTensor(_Sealed):
    """What ``_rebuild_tensor_v2`` returns until the storages are read."""

    def __init__(self, storage: Any, offset: Any, size: Any, stride: Any) -> None:
        self.storage, self.offset = storage, offset
        self.size, self.stride = size, stride


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> _LazyTensor:
    return _LazyTensor(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


_ALLOWED: dict[tuple[str, str], Callable[..., Any]] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the state-dict globals listed above."""

    def __init__(self, file: BinaryIO, path: Path,
                 load_storage: Callable[[tuple], _Storage] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._path = path
        self._load_storage = load_storage

    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        raise LabtfError(f"{self._path}: refusing to load global '{module}.{name}' "
                         "(only plain PyTorch state dicts are accepted)")

    def persistent_load(self, pid: Any) -> Any:
        if self._load_storage is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise LabtfError(f"{self._path}: unexpected persistent id {pid!r:.80}")
        return self._load_storage(pid)


def _bad(path: Path, what: str) -> LabtfError:
    return LabtfError(f"{path}: not a readable PyTorch checkpoint ({what})")


def _read_legacy(f: BinaryIO, path: Path) -> Any:
    header = [_RestrictedUnpickler(f, path).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC or header[1] != _LEGACY_PROTOCOL:
        raise _bad(path, "wrong magic number or protocol version")
    if not isinstance(header[2], dict) or not header[2].get("little_endian", True):
        raise _bad(path, "big-endian checkpoints are not supported")
    roots: dict[str, _Storage] = {}

    def load_storage(pid: tuple) -> Any:
        _, stype, key, _location, numel, view = (tuple(pid) + (None,) * 6)[:6]
        if not isinstance(stype, _StorageType):
            raise _bad(path, f"storage of unknown type {stype!r:.40}")
        root = roots.setdefault(str(key), _Storage(stype, numel))
        if view is None:
            return root
        _view_key, view_offset, view_size = view  # a slice of the root storage
        return ("view", root, int(view_offset), int(view_size))

    result = _RestrictedUnpickler(f, path, load_storage).load()
    keys = _RestrictedUnpickler(f, path).load()
    if not isinstance(keys, list) or set(map(str, keys)) != set(roots):
        raise _bad(path, "storage key list does not match the object pickle")
    for key in keys:
        storage = roots[str(key)]
        count = np.frombuffer(f.read(8), dtype="<i8")
        if count.size != 1 or int(count[0]) != storage.numel:
            raise _bad(path, f"storage {key} has a wrong element count")
        nbytes = storage.numel * storage.stype.dtype.itemsize
        if nbytes > max(0, os.fstat(f.fileno()).st_size - f.tell()):
            raise _bad(path, f"storage {key} is truncated")    # before allocating nbytes
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise _bad(path, f"storage {key} is truncated")
        storage.data = np.frombuffer(raw, dtype=storage.stype.dtype)
    return result


#: Zip checkpoints: most uncompressed bytes read in all, and most uncompressed bytes per byte
#: of the file (torch stores members uncompressed, ratio ~1; a 1 MB deflate bomb declares GBs).
#: zipfile never inflates past a member's declared size, so checking those is enough.
MAX_UNCOMPRESSED_BYTES = 1 << 30
MAX_COMPRESSION_RATIO = 10


def _check_zip_sizes(zf: zipfile.ZipFile, path: Path) -> None:
    total = sum(max(0, i.file_size) for i in zf.infolist())
    ratio = total / max(1, path.stat().st_size)
    if total > MAX_UNCOMPRESSED_BYTES or ratio > MAX_COMPRESSION_RATIO:
        raise _bad(path, f"its members unpack to {total / 1e6:.0f} MB, {ratio:.0f}x the file "
                         f"(limits {MAX_UNCOMPRESSED_BYTES / 1e6:.0f} MB, "
                         f"{MAX_COMPRESSION_RATIO}x); a zip bomb or not a weights file")


def _read_zip(path: Path) -> Any:
    with zipfile.ZipFile(path) as zf:
        _check_zip_sizes(zf, path)
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkl) != 1:
            raise _bad(path, "zip archive without a single <root>/data.pkl")
        root_dir = pkl[0][: -len("data.pkl")]
        byteorder = root_dir + "byteorder"
        if byteorder in names and zf.read(byteorder).strip() != b"little":
            raise _bad(path, "big-endian checkpoints are not supported")
        storages: dict[str, _Storage] = {}

        def load_storage(pid: tuple) -> Any:
            if len(pid) < 5 or not isinstance(pid[1], _StorageType):
                raise _bad(path, f"unexpected storage id {pid!r:.80}")
            key = str(pid[2])
            if key not in storages:
                storage = _Storage(pid[1], pid[4])
                try:
                    raw = zf.read(f"{root_dir}data/{key}")
                except KeyError:
                    raise _bad(path, f"missing storage {key}") from None
                if len(raw) != storage.numel * storage.stype.dtype.itemsize:
                    raise _bad(path, f"storage {key} has a wrong size")
                storage.data = np.frombuffer(raw, dtype=storage.stype.dtype)
                storages[key] = storage
            return storages[key]

        with zf.open(pkl[0]) as f:
            return _RestrictedUnpickler(f, path, load_storage).load()


def _materialize(t: _LazyTensor, path: Path, name: str) -> np.ndarray:
    storage, base = t.storage, 0
    if isinstance(storage, tuple) and storage and storage[0] == "view":
        _, storage, base, _view_size = storage
    if not isinstance(storage, _Storage) or storage.data is None:
        raise _bad(path, f"tensor {name} has no storage data")
    try:
        offset = base + int(t.offset)
        size = tuple(int(s) for s in t.size)
        stride = tuple(int(s) for s in t.stride)
    except (TypeError, ValueError):
        raise _bad(path, f"tensor {name} has a malformed size or stride") from None
    data = storage.data
    if len(size) != len(stride) or min(size + stride + (offset,), default=0) < 0:
        raise _bad(path, f"tensor {name} has a malformed size or stride")
    if 0 not in size:
        last = offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= data.size:
            raise _bad(path, f"tensor {name} reaches past the end of its storage")
    item = data.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        data[offset:] if offset < data.size else data[:0], shape=size,
        strides=tuple(s * item for s in stride), writeable=False)
    arr = np.array(view, dtype=data.dtype.newbyteorder("="), copy=True, order="C")
    if storage.stype.name == "BFloat16Storage":
        arr = (arr.astype(np.uint32) << 16).view(np.float32)
    return arr


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Load a PyTorch state dict as numpy arrays, without importing torch.

    Args:
        path: A ``.pth``/``.pt`` file in the legacy or zip serialization format.

    Returns:
        The state dict, in file order, as ``{name: numpy array}`` (copies).

    Raises:
        LabtfError: If the file is missing, malformed, is not a flat state dict,
            or its pickle names any global outside the short allow-list.
    """
    path = Path(path)
    try:
        if zipfile.is_zipfile(path):
            result = _read_zip(path)
        else:
            with open(path, "rb") as f:
                result = _read_legacy(f, path)
        if isinstance(result, dict) and isinstance(result.get("state_dict"), dict):
            result = result["state_dict"]
        if not isinstance(result, dict):
            raise _bad(path, f"top-level object is a {type(result).__name__}, not a state dict")
        out: dict[str, np.ndarray] = {}
        for name, value in result.items():
            if not isinstance(value, _LazyTensor):
                raise _bad(path, f"entry {name!r} is not a tensor")
            out[str(name)] = _materialize(value, path, str(name))
    except LabtfError:
        raise
    except OSError as exc:
        raise LabtfError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError, OverflowError, zipfile.BadZipFile) as exc:
        raise _bad(path, f"{type(exc).__name__}: {exc}") from None
    logger.debug("read %d tensors from %s", len(out), path)
    return out
