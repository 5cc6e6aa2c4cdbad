"""labtf.backbones.torch_pickle: torch-free, restricted .pth reading."""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from labtf.backbones.torch_pickle import load_state_dict
from labtf.errors import LabtfError

# -- a tiny writer of PyTorch's two formats, opcode by opcode (no torch) ------


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _str(s: str) -> bytes:
    raw = s.encode()
    return b"X" + struct.pack("<I", len(raw)) + raw


def _int(i: int) -> bytes:
    return b"J" + struct.pack("<i", i)


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


_ORDERED_DICT = _global("collections", "OrderedDict") + b")R"


def _tensor(stype: str, key: str, numel: int, offset: int, size, stride, legacy: bool,
            rebuild: str = "_rebuild_tensor_v2") -> bytes:
    pid = [_str("storage"), _global("torch", stype), _str(key), _str("cpu"), _int(numel)]
    if legacy:
        pid.append(b"N")  # no view metadata
    args = [_tuple(pid) + b"Q", _int(offset), _tuple(map(_int, size)),
            _tuple(map(_int, stride)), b"\x89", _ORDERED_DICT]
    return _global("torch._utils", rebuild) + _tuple(args) + b"R"


def _state_dict_pickle(entries: dict[str, bytes]) -> bytes:
    items = b"".join(_str(k) + v for k, v in entries.items())
    return b"\x80\x02" + _ORDERED_DICT + b"(" + items + b"u."


def _legacy_file(path: Path, obj_pickle: bytes, storages: dict[str, np.ndarray]) -> Path:
    out = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001,
                   {"protocol_version": 1001, "little_endian": True,
                    "type_sizes": {"short": 2, "int": 4, "long": 4}}):
        out.write(pickle.dumps(header, protocol=2))
    out.write(obj_pickle)
    out.write(pickle.dumps(list(storages), protocol=2))
    for arr in storages.values():
        out.write(struct.pack("<q", arr.size))
        out.write(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    path.write_bytes(out.getvalue())
    return path


def _zip_file(path: Path, obj_pickle: bytes, storages: dict[str, np.ndarray]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", obj_pickle)
        zf.writestr("archive/byteorder", "little")
        for key, arr in storages.items():
            zf.writestr(f"archive/data/{key}", arr.tobytes())
        zf.writestr("archive/version", "3\n")
    return path


_STORE = {"0": np.arange(12, dtype=np.float32) * 0.5, "1": np.array([7], dtype=np.int64),
          "2": np.array([1.5, -2.25, 3.0], dtype=np.float16)}


def _entries(legacy: bool) -> dict[str, bytes]:
    return {
        "conv.weight": _tensor("FloatStorage", "0", 12, 0, (2, 3, 2), (6, 2, 1), legacy),
        "conv.weight_t": _tensor("FloatStorage", "0", 12, 0, (3, 4), (1, 3), legacy),
        "tail": _tensor("FloatStorage", "0", 12, 5, (2, 2), (4, 2), legacy),
        "bn.num_batches_tracked": _tensor("LongStorage", "1", 1, 0, (), (), legacy),
        "half": _tensor("HalfStorage", "2", 3, 1, (2,), (1,), legacy),
        "param": _global("torch._utils", "_rebuild_parameter") + _tuple(
            [_tensor("FloatStorage", "0", 12, 2, (3,), (3,), legacy), b"\x88", _ORDERED_DICT]) + b"R",
    }


def _expected() -> dict[str, np.ndarray]:
    base = _STORE["0"]
    return {
        "conv.weight": base.reshape(2, 3, 2),
        "conv.weight_t": base.reshape(4, 3).T,
        "tail": np.array([[base[5], base[7]], [base[9], base[11]]]),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
        "half": np.array([-2.25, 3.0], dtype=np.float16),
        "param": base[2:9:3],
    }


@pytest.mark.parametrize("fmt", ["legacy", "zip"])
def test_round_trip(tmp_path: Path, fmt: str) -> None:
    legacy = fmt == "legacy"
    writer = _legacy_file if legacy else _zip_file
    path = writer(tmp_path / "tiny.pth", _state_dict_pickle(_entries(legacy)), _STORE)
    sd = load_state_dict(path)
    expected = _expected()
    assert list(sd) == list(expected)
    for name, want in expected.items():
        assert sd[name].dtype == want.dtype, name
        np.testing.assert_array_equal(sd[name], want, err_msg=name)
        assert sd[name].flags.c_contiguous and sd[name].flags.owndata, name


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-pickle",))


def test_refuses_os_system_global(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = _legacy_file(tmp_path / "evil.pth", pickle.dumps({"x": _Evil()}, protocol=2), {})
    with pytest.raises(LabtfError, match=r"refusing to load global '(posix|nt)\.system'") as err:
        load_state_dict(path)
    assert str(path) in str(err.value)
    assert not (tmp_path / "pwned-by-pickle").exists()


def test_refuses_evil_header_and_zip_payload(tmp_path: Path) -> None:
    evil = pickle.dumps(_Evil(), protocol=2)
    header_path = tmp_path / "evil_header.pth"
    header_path.write_bytes(evil)
    with pytest.raises(LabtfError, match="refusing to load global"):
        load_state_dict(header_path)
    zip_path = _zip_file(tmp_path / "evil.zip.pth", b"\x80\x02" + _global("builtins", "eval")
                         + _tuple([_str("1+1")]) + b"R.", {})
    with pytest.raises(LabtfError, match=r"builtins\.eval"):
        load_state_dict(zip_path)


def test_rejects_out_of_bounds_view(tmp_path: Path) -> None:
    entries = {"w": _tensor("FloatStorage", "0", 12, 4, (3, 4), (4, 1), legacy=True)}
    path = _legacy_file(tmp_path / "oob.pth", _state_dict_pickle(entries), {"0": _STORE["0"]})
    with pytest.raises(LabtfError, match="past the end"):
        load_state_dict(path)


def test_rejects_truncated_and_missing_files(tmp_path: Path) -> None:
    good = _legacy_file(tmp_path / "good.pth", _state_dict_pickle(_entries(True)), _STORE)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(LabtfError, match="cut.pth"):
        load_state_dict(cut)
    with pytest.raises(LabtfError, match="cannot read checkpoint"):
        load_state_dict(tmp_path / "absent.pth")
