"""TFLite Metadata (``metadata_schema.fbs``) writer and reader, without tflite-support.

The metadata is what MediaPipe Tasks and the TF-Lite Support/Task libraries read:
a ``ModelMetadata`` flatbuffer (file identifier ``M001``) stored as a buffer of
the model and listed in the model's ``metadata`` under ``TFLITE_METADATA``, plus
associated files in a zip appended to the flatbuffer whose entries are STORED
(MediaPipe refuses deflated ones). labtf writes:

- input: ``ImageProperties`` RGB with the input side, ``NormalizationOptions``
  mean 0 / std 1 (labtf models take 0..255 RGB and preprocess in-graph; one
  value for all channels, which is all MediaPipe accepts) and ``Stats`` 0..255;
- outputs: one ``TensorMetadata`` per model output in ``SubGraph.outputs`` order,
  ``labels.txt`` as ``TENSOR_AXIS_LABELS`` on the class-probability output;
- model: name, description, version, author, licence, ``min_parser_version``
  and any extra associated files (labtf keeps ``labtf.json`` there).

The model is re-packed with TensorFlow's own schema code
(``tensorflow.lite.python.schema_py_generated``, ``flatbuffer_utils``); the
metadata tables are built with the ``flatbuffers`` Builder in the .fbs field
order (slot numbers below). :func:`write_metadata` and :func:`read_metadata` are
the public entry points (also for other exporters that ship a ``.tflite``).
"""
from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from labtf.errors import LabtfError

#: Name of the model metadata entry and file identifier of its flatbuffer.
METADATA_NAME, FILE_IDENTIFIER = "TFLITE_METADATA", b"M001"
#: Oldest metadata parser that understands every field written here.
MIN_PARSER_VERSION = "1.0.0"
LABELS_FILE = "labels.txt"
#: AssociatedFileType values.
UNKNOWN, DESCRIPTIONS, TENSOR_AXIS_LABELS = 0, 1, 2
#: ContentProperties / ProcessUnitOptions union tags and ColorSpaceType.RGB.
FEATURE_PROPERTIES, IMAGE_PROPERTIES, NORMALIZATION_OPTIONS, RGB = 1, 2, 1, 1
_COLOR_SPACES = {0: "UNKNOWN", 1: "RGB", 2: "GRAYSCALE"}


@dataclass
class TensorInfo:
    """Metadata of one input or output tensor."""

    name: str
    description: str = ""
    color_space: str | None = None          # inputs: "RGB"
    image_size: tuple[int, int] | None = None
    mean: list[float] | None = None         # NormalizationOptions
    std: list[float] | None = None
    value_range: tuple[float, float] | None = None   # Stats (min, max)
    files: list[tuple[str, int]] = field(default_factory=list)   # (name, AssociatedFileType)


@dataclass
class TFLiteMetadata:
    """What :func:`read_metadata` finds in a ``.tflite``."""

    name: str
    description: str
    version: str
    author: str
    license: str
    min_parser_version: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    model_files: list[tuple[str, int]]
    files: dict[str, bytes]                 # associated files from the appended zip

    @property
    def labels(self) -> list[str]:
        """Class names from the first TENSOR_AXIS_LABELS file of an output (index order)."""
        for out in self.outputs:
            for name, kind in out.files:
                if kind == TENSOR_AXIS_LABELS and name in self.files:
                    return [c for c in self.files[name].decode().splitlines() if c]
        return []


# ----------------------------------------------------------------------------- writing

def _vector(b, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for off in reversed(offsets):
        b.PrependUOffsetTRelative(off)
    return b.EndVector()


def _floats(b, values) -> int:
    import numpy as np

    return b.CreateNumpyVector(np.asarray(values, np.float32))


def _table(b, fields: list[tuple[str, int, int]]) -> int:
    """One table from (kind, slot, value) with kind ``off`` | ``i8`` | ``u32``."""
    b.StartObject(max(slot for _, slot, _ in fields) + 1 if fields else 0)
    for kind, slot, value in fields:
        if kind == "off":
            b.PrependUOffsetTRelativeSlot(slot, value, 0)
        elif kind == "i8":
            b.PrependInt8Slot(slot, value, 0)
        else:
            b.PrependUint32Slot(slot, value, 0)
    return b.EndObject()


def _strings(b, **values: str | None) -> dict[str, int]:
    return {k: b.CreateString(v) for k, v in values.items() if v}


def _associated_files(b, files: list[tuple[str, str, int]]) -> int:
    tables = []
    for name, description, kind in files:       # AssociatedFile: name 0, description 1, type 2
        s = _strings(b, name=name, description=description)
        tables.append(_table(b, [("off", 0, s["name"])]
                             + ([("off", 1, s["description"])] if "description" in s else [])
                             + [("i8", 2, kind)]))
    return _vector(b, tables)


def _tensor(b, info: TensorInfo, files: list[tuple[str, str, int]]) -> int:
    s = _strings(b, name=info.name, description=info.description)
    if info.color_space:           # ImageProperties: color_space 0, default_size 1 (ImageSize w 0, h 1)
        size = []
        if info.image_size:
            size = [("off", 1, _table(b, [("u32", 0, info.image_size[0]),
                                          ("u32", 1, info.image_size[1])]))]
        props = _table(b, [("i8", 0, RGB)] + size)
        kind = IMAGE_PROPERTIES
    else:
        props, kind = _table(b, []), FEATURE_PROPERTIES
    content = _table(b, [("i8", 0, kind), ("off", 1, props)])   # Content: type 0, value 1
    fields = [("off", 3, content)]
    if info.mean is not None:       # ProcessUnit(options_type 0, options 1) -> NormalizationOptions
        norm = _table(b, [("off", 0, _floats(b, info.mean)), ("off", 1, _floats(b, info.std))])
        unit = _table(b, [("i8", 0, NORMALIZATION_OPTIONS), ("off", 1, norm)])
        fields.append(("off", 4, _vector(b, [unit])))
    if info.value_range is not None:   # Stats: max 0, min 1
        lo, hi = info.value_range
        fields.append(("off", 5, _table(b, [("off", 0, _floats(b, [hi])),
                                            ("off", 1, _floats(b, [lo]))])))
    if files:
        fields.append(("off", 6, _associated_files(b, files)))
    # TensorMetadata: name 0, description 1, content 3, process_units 4, stats 5, files 6
    return _table(b, [("off", 0, s["name"])]
                  + ([("off", 1, s["description"])] if "description" in s else []) + fields)


def build_metadata(*, name: str, description: str, version: str, author: str, license: str,
                   inputs: list[TensorInfo], outputs: list[TensorInfo],
                   file_descriptions: dict[str, str] | None = None,
                   model_files: list[tuple[str, str]] | None = None) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``).

    Args:
        name, description, version, author, license: model-level strings.
        inputs, outputs: one :class:`TensorInfo` per model input/output, in subgraph order;
            their ``files`` name associated files (described by ``file_descriptions``).
        file_descriptions: associated file name -> description.
        model_files: model-level associated files as (name, description).

    Returns:
        The metadata flatbuffer bytes.
    """
    import flatbuffers

    desc = file_descriptions or {}
    b = flatbuffers.Builder(1024)
    ins = [_tensor(b, t, [(n, desc.get(n, ""), k) for n, k in t.files]) for t in inputs]
    outs = [_tensor(b, t, [(n, desc.get(n, ""), k) for n, k in t.files]) for t in outputs]
    # SubGraphMetadata: name 0, description 1, inputs 2, outputs 3
    sub_name = b.CreateString(name)
    subgraph = _table(b, [("off", 0, sub_name), ("off", 2, _vector(b, ins)),
                          ("off", 3, _vector(b, outs))])
    s = _strings(b, name=name, description=description, version=version, author=author,
                 license=license, min_parser_version=MIN_PARSER_VERSION)
    fields = [("off", 3, _vector(b, [subgraph]))]
    if model_files:
        fields.append(("off", 6, _associated_files(b, [(n, d, UNKNOWN) for n, d in model_files])))
    slots = {"name": 0, "description": 1, "version": 2, "author": 4, "license": 5,
             "min_parser_version": 7}
    fields += [("off", slots[k], v) for k, v in s.items()]
    b.Finish(_table(b, fields), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def _signature_names(model) -> dict[int, str]:
    """Tensor index -> signature key (``image``, ``probabilities``, ``cam``)."""
    names = {}
    for sig in model.signatureDefs or []:
        for t in (sig.inputs or []) + (sig.outputs or []):
            names[t.tensorIndex] = t.name.decode() if isinstance(t.name, bytes) else t.name
    return names


def write_metadata(tflite_bytes: bytes, *, labels: list[str], name: str, version: str,
                   author: str, license: str, description: str = "",
                   label_output: str = "probabilities",
                   output_descriptions: dict[str, str] | None = None,
                   extra_files: dict[str, bytes] | None = None) -> bytes:
    """Add TFLite Metadata and a STORED associated-files zip to a TF-Lite flatbuffer.

    Any metadata or trailing zip already there is replaced. The single input is
    described as an RGB image (0..255, mean 0 / std 1); each output gets tensor
    metadata named after its signature key, and ``labels.txt`` is attached to the
    ``label_output`` output (or the only output) as TENSOR_AXIS_LABELS.

    Args:
        tflite_bytes: a TF-Lite model (plain flatbuffer, or one with an appended zip).
        labels: class names in output index order.
        name, version, author, license, description: model-level fields.
        label_output: signature name of the class-probability output.
        output_descriptions: signature name -> description.
        extra_files: more associated files (model level), name -> bytes.

    Returns:
        The new model bytes.

    Raises:
        LabtfError: not a TF-Lite model, or no output to attach the labels to.
    """
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    data = bytes(tflite_bytes)
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise LabtfError("not a TF-Lite flatbuffer (no 'TFL3' identifier)")
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(data))
    graph = model.subgraphs[0]
    sig = _signature_names(model)
    out_names = [sig.get(i, f"output_{k}") for k, i in enumerate(graph.outputs)]
    target = label_output if label_output in out_names else (
        out_names[0] if len(out_names) == 1 else None)
    if target is None:
        raise LabtfError(f"no output '{label_output}' to attach labels to; outputs: "
                         f"{', '.join(out_names)}")
    inputs = []
    for i in graph.inputs:
        shape = list(graph.tensors[i].shape)
        size = (int(shape[2]), int(shape[1])) if len(shape) == 4 else None
        inputs.append(TensorInfo(sig.get(i, "image"), "RGB image, 0..255 per channel",
                                 color_space="RGB", image_size=size, mean=[0.0], std=[1.0],
                                 value_range=(0.0, 255.0)))
    descs = output_descriptions or {}
    outputs = [TensorInfo(n, descs.get(n, ""),
                          files=[(LABELS_FILE, TENSOR_AXIS_LABELS)] if n == target else [])
               for n in out_names]
    extra = dict(extra_files or {})
    meta = build_metadata(name=name, description=description, version=version, author=author,
                          license=license, inputs=inputs, outputs=outputs,
                          file_descriptions={LABELS_FILE: "class names, one per line, index order"},
                          model_files=[(n, "labtf artifact description") for n in extra])
    keep = [m for m in (model.metadata or []) if _text(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = list(meta)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
    model.metadata = keep + [entry]
    flat = flatbuffer_utils.convert_object_to_bytearray(model)
    return _append_zip(flat, {LABELS_FILE: ("\n".join(labels) + "\n").encode(), **extra})


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _append_zip(flat: bytes, files: dict[str, bytes]) -> bytes:
    """Flatbuffer + a STORED zip, offsets absolute in the file (as tflite-support writes it)."""
    buf = io.BytesIO(flat)
    buf.seek(0, io.SEEK_END)
    with zipfile.ZipFile(buf, "a", zipfile.ZIP_STORED) as zf:
        for name, data in files.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


# ----------------------------------------------------------------------------- reading

def _fields(tab):
    from flatbuffers import number_types as N
    from flatbuffers.table import Table

    class F:
        def off(self, slot):
            return tab.Offset(4 + 2 * slot)

        def str(self, slot):
            o = self.off(slot)
            return tab.String(o + tab.Pos).decode() if o else ""

        def i8(self, slot):
            o = self.off(slot)
            return tab.Get(N.Int8Flags, o + tab.Pos) if o else 0

        def u32(self, slot):
            o = self.off(slot)
            return tab.Get(N.Uint32Flags, o + tab.Pos) if o else 0

        def table(self, slot):
            o = self.off(slot)
            return _fields(Table(tab.Bytes, tab.Indirect(o + tab.Pos))) if o else None

        def union(self, slot):
            o = self.off(slot)
            if not o:
                return None
            t = Table(bytearray(), 0)
            tab.Union(t, o)
            return _fields(t)

        def tables(self, slot):
            o = self.off(slot)
            if not o:
                return []
            start = tab.Vector(o)
            return [_fields(Table(tab.Bytes, tab.Indirect(start + 4 * i)))
                    for i in range(tab.VectorLen(o))]

        def floats(self, slot):
            o = self.off(slot)
            return [float(v) for v in tab.GetVectorAsNumpy(N.Float32Flags, o)] if o else None

    return F()


def _files(f, slot) -> list[tuple[str, int]]:
    return [(a.str(0), a.i8(2)) for a in f.tables(slot)]


def _tensor_info(t) -> TensorInfo:
    info = TensorInfo(t.str(0), t.str(1), files=_files(t, 6))
    content = t.table(3)
    if content is not None and content.i8(0) == IMAGE_PROPERTIES:
        props = content.union(1)
        info.color_space = _COLOR_SPACES.get(props.i8(0), "UNKNOWN")
        size = props.table(1)
        info.image_size = (size.u32(0), size.u32(1)) if size else None
    for unit in t.tables(4):
        if unit.i8(0) == NORMALIZATION_OPTIONS:
            norm = unit.union(1)
            info.mean, info.std = norm.floats(0), norm.floats(1)
    stats = t.table(5)
    if stats is not None and stats.floats(0) and stats.floats(1):
        info.value_range = (stats.floats(1)[0], stats.floats(0)[0])
    return info


def metadata_buffer(tflite_bytes: bytes) -> bytes | None:
    """The raw ``TFLITE_METADATA`` flatbuffer of a model, or None when it has none."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.Model.GetRootAs(tflite_bytes, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if _text(entry.Name()) == METADATA_NAME:
            buf = model.Buffers(entry.Buffer())
            if buf.Offset():   # > 2 GB models keep buffers after the flatbuffer
                return bytes(tflite_bytes[buf.Offset():buf.Offset() + buf.Size()])
            return buf.DataAsNumpy().tobytes() if buf.DataLength() else b""
    return None


def read_metadata(path: str | Path | bytes) -> TFLiteMetadata | None:
    """TFLite Metadata and associated files of a ``.tflite``.

    Args:
        path: the file, or its bytes.

    Returns:
        The metadata, or None when the model has no ``TFLITE_METADATA`` entry.

    Raises:
        LabtfError: not a TF-Lite file, or the metadata is not an ``M001`` flatbuffer.
    """
    from flatbuffers import encode, packer, util
    from flatbuffers.table import Table

    where = "model" if isinstance(path, (bytes, bytearray)) else str(path)
    data = bytes(path) if isinstance(path, (bytes, bytearray)) else Path(path).read_bytes()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise LabtfError(f"{where}: not a TF-Lite file (no 'TFL3' identifier)")
    raw = metadata_buffer(data)
    if raw is None:
        return None
    if not util.BufferHasIdentifier(raw, 0, FILE_IDENTIFIER):
        raise LabtfError(f"{where}: {METADATA_NAME} is not a metadata flatbuffer (no 'M001')")
    root = _fields(Table(bytearray(raw), encode.Get(packer.uoffset, raw, 0)))
    subgraphs = root.tables(3)
    files: dict[str, bytes] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            files = {n: zf.read(n) for n in zf.namelist()}
    except zipfile.BadZipFile:
        pass
    return TFLiteMetadata(
        name=root.str(0), description=root.str(1), version=root.str(2), author=root.str(4),
        license=root.str(5), min_parser_version=root.str(7),
        inputs=[_tensor_info(t) for t in subgraphs[0].tables(2)] if subgraphs else [],
        outputs=[_tensor_info(t) for t in subgraphs[0].tables(3)] if subgraphs else [],
        model_files=_files(root, 6), files=files)
