"""Read and write Caffe's files: ``.prototxt`` nets and solvers (protobuf text format), ``.caffemodel``
weights and ``.solverstate`` snapshots (protobuf binary), and convert blobs to and from numpy arrays.

Reading always upgrades legacy nets and solvers as Caffe does (see :mod:`glrl.caffe.upgrade`), so callers
see one current format. Every problem with a file raises :class:`glrl.errors.FormatError` naming the file:
text syntax errors give the line and column; binary files that are empty, truncated, or not the expected
kind (an image, an HDF5 file, a prototxt, a pickle) are refused rather than half-read. Writes are atomic.
"""
from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
from google.protobuf import message as protobuf_message
from google.protobuf import text_format

from glrl.caffe import pb
from glrl.caffe.proto import has_unknown_fields
from glrl.caffe.upgrade import upgrade_net, upgrade_solver
from glrl.errors import FormatError, GlrlError, from_os_error
from glrl.fsutil import atomic_write_bytes, atomic_write_text

PathLike = Union[str, "os.PathLike[str]"]

# Leading bytes of files that people pass by mistake, and what they are.
_MAGIC = [
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Caffe's snapshot_format: HDF5, or a patch set)"),
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.pth checkpoint?)"),
    (b"\x1f\x8b", "a gzip-compressed file"),
    (b"\x80\x02", "a Python pickle"),
    (b"\x80\x03", "a Python pickle"),
    (b"\x80\x04", "a Python pickle"),
    (b"\x80\x05", "a Python pickle"),
]


# ---------------------------------------------------------------------------------------------- text


def parse_net(text: str, source: str = "<string>") -> Any:
    """Parse a net in protobuf text format (a ``.prototxt``) and upgrade it to the current format."""
    net = _parse_kind(text, source, "net")
    upgrade_net(net, source)
    return net


def read_net(path: PathLike) -> Any:
    """Read and upgrade a ``.prototxt`` net."""
    return parse_net(_read_text(path, "net"), str(path))


def net_to_text(net: Any) -> str:
    """The net in protobuf text format, laid out as Caffe writes it."""
    return text_format.MessageToString(net)


def write_net(net: Any, path: PathLike) -> None:
    """Write ``net`` as a ``.prototxt`` (atomically)."""
    _write(path, lambda: atomic_write_text(path, net_to_text(net)))


def parse_solver(text: str, source: str = "<string>") -> Any:
    """Parse a ``solver.prototxt`` and upgrade a legacy ``solver_type`` to ``type``."""
    solver = _parse_kind(text, source, "solver")
    upgrade_solver(solver, source)
    return solver


def _parse_kind(text: str, source: str, kind: str) -> Any:
    """Parse text as a net or a solver; a file of the other kind, given in the wrong place, is named so."""
    kinds = {"net": (pb.NetParameter, "a Caffe net"), "solver": (pb.SolverParameter, "a Caffe solver")}
    (message, what), (other_message, other_what) = kinds[kind], kinds["solver" if kind == "net" else "net"]
    try:
        return _parse_text(text, message(), source, what)
    except FormatError as error:
        try:
            _parse_text(text, other_message(), source, other_what)
        except FormatError:
            raise error from None
        raise FormatError(f"{source} is {other_what}, not {what}",
                          hint="the solver names its net in `net:`; give each file where it belongs") from None


def read_solver(path: PathLike) -> Any:
    """Read and upgrade a ``solver.prototxt``."""
    return parse_solver(_read_text(path, "solver"), str(path))


def solver_to_text(solver: Any) -> str:
    """The solver in protobuf text format."""
    return text_format.MessageToString(solver)


def write_solver(solver: Any, path: PathLike) -> None:
    """Write ``solver`` as a ``solver.prototxt`` (atomically)."""
    _write(path, lambda: atomic_write_text(path, solver_to_text(solver)))


def _read_text(path: PathLike, what: str) -> str:
    data = _read_bytes(path, what)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        kind = _sniff(data)
        raise FormatError(
            f"{path}: not a text {what} prototxt ({kind or f'binary data at byte {exc.start}'})",
            hint="a .prototxt is protobuf text; binary weights (.caffemodel) are a different file",
        ) from None


def _parse_text(text: str, message: Any, source: str, what: str) -> Any:
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        line, column, reason = _parse_error_position(exc)
        where = f"{source}:{line}:{column}" if line is not None else source
        error = FormatError(f"{where}: syntax error in {what}: {reason}", hint=_line_hint(text, line))
        error.line = line
        raise error from None
    return message


def _parse_error_position(exc: Exception) -> Tuple[Optional[int], Optional[int], str]:
    """(line, column, reason) of a text_format.ParseError; its message starts with ``line:col :``."""
    text = str(exc)
    match = re.match(r"^(?:[^:]*:)?(\d+):(\d+)\s*:\s*(.*)$", text, re.DOTALL)
    line = getattr(exc, "GetLine", lambda: None)()
    column = getattr(exc, "GetColumn", lambda: None)()
    if match:
        line = line if line is not None else int(match.group(1))
        column = column if column is not None else int(match.group(2))
        return line, column, match.group(3).strip()
    return line, column, text


def _line_hint(text: str, line: Optional[int]) -> str:
    if line is None or not 1 <= line <= len(text.splitlines()):
        return "check the file against Caffe's caffe.proto (docs/caffe-formats.md lists what glrl reads)"
    return f"line {line} reads: {text.splitlines()[line - 1].strip()!r}"


# -------------------------------------------------------------------------------------------- binary


def read_caffemodel(path: PathLike) -> Any:
    """Read a binary ``.caffemodel`` (a NetParameter with blobs) and upgrade it to the current format."""
    net = _parse_caffemodel(_read_bytes(path, "caffemodel"), path)
    upgrade_net(net, str(path))
    return net


def _parse_caffemodel(data: bytes, path: PathLike) -> Any:
    net = _parse_binary(data, pb.NetParameter(), path, "caffemodel")
    layers = list(net.layer) + list(net.layers)
    if not layers or any(not layer.name for layer in layers):
        raise FormatError(
            f"{path}: not a caffemodel ({_describe(data, 'it has no named layers')})",
            hint=_binary_hint("caffemodel"),
        )
    return net


def write_caffemodel(net: Any, path: PathLike) -> None:
    """Write ``net`` (with its layers' blobs) as a binary ``.caffemodel`` (atomically)."""
    _write(path, lambda: atomic_write_bytes(path, net.SerializeToString()))


def read_solverstate(path: PathLike) -> Any:
    """Read a binary ``.solverstate`` (iteration, weights file and solver history blobs)."""
    return _parse_solverstate(_read_bytes(path, "solverstate"), path)


def _parse_solverstate(data: bytes, path: PathLike) -> Any:
    state = _parse_binary(data, pb.SolverState(), path, "solverstate")
    if not state.HasField("iter") or state.iter < 0 or has_unknown_fields(state):
        raise FormatError(
            f"{path}: not a solverstate ({_describe(data, 'it lacks the fields a solverstate holds')})",
            hint=_binary_hint("solverstate"),
        )
    return state


def write_solverstate(state: Any, path: PathLike) -> None:
    """Write ``state`` as a binary ``.solverstate`` (atomically)."""
    _write(path, lambda: atomic_write_bytes(path, state.SerializeToString()))


def _read_bytes(path: PathLike, what: str) -> bytes:
    target = Path(path)
    if not target.is_file():
        problem = "is a folder" if target.is_dir() else "does not exist"
        raise FormatError(f"{path}: {what} file {problem}", hint="check the path")
    try:
        data = target.read_bytes()
    except OSError as exc:
        raise GlrlError(f"{path}: cannot read the {what} file ({exc.strerror})",
                        hint="check its permissions") from None
    if not data:
        raise FormatError(f"{path}: {what} file is empty", hint="it was probably cut short; write it again")
    return data


def _write(path: PathLike, write: Callable[[], None]) -> None:
    try:
        write()
    except OSError as exc:  # the hint says what the path is (a file where a folder is needed, a folder, ...)
        raise GlrlError(f"{path}: cannot write ({exc.strerror or exc})", hint=from_os_error(exc).hint) from None


def _parse_binary(data: bytes, message: Any, path: PathLike, what: str) -> Any:
    kind = _sniff(data)
    if kind is not None:
        raise FormatError(f"{path}: not a {what}: this is {kind}", hint=_binary_hint(what))
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            message.ParseFromString(data)
        # protobuf 3.x's C++ parser only warns about some corruption ("Unexpected end-group tag")
        complaints = [w.message for w in caught if issubclass(w.category, RuntimeWarning)]
        if complaints:
            raise protobuf_message.DecodeError(str(complaints[0]))
    except (protobuf_message.DecodeError, RuntimeError, ValueError) as exc:
        raise FormatError(
            f"{path}: not a readable {what} ({_describe(data, f'{len(data)} bytes, truncated or corrupt')}; "
            f"protobuf says: {exc})",
            hint=f"copy or download the file again; {_binary_hint(what)}",
        ) from None
    return message


def _binary_hint(what: str) -> str:
    if what == "caffemodel":
        return "pass the binary .caffemodel weights (a .prototxt net is protobuf text, not weights)"
    return f"pass the binary .{what} that Caffe or glrl wrote beside its .caffemodel"


def _sniff(data: bytes) -> Optional[str]:
    """What a file is, judged by its first bytes, when it is a common kind that is never protobuf."""
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


def _describe(data: bytes, otherwise: str) -> str:
    """A short description of a file that failed to read as binary protobuf."""
    kind = _sniff(data)
    if kind is not None:
        return f"this is {kind}"
    return "this is a text file, perhaps a prototxt" if _is_text(data) else otherwise


# -------------------------------------------------------------------------------------- any file kind


@dataclass
class CaffeFile:
    """A Caffe file of any kind, read and upgraded: ``kind`` is net, solver, caffemodel or solverstate."""

    kind: str
    message: Any
    upgrades: List[str] = field(default_factory=list)  # what reading upgraded, empty for current files


def read_any(path: PathLike) -> CaffeFile:
    """Read a net or solver prototxt, a caffemodel or a solverstate, telling them apart by content."""
    data = _read_bytes(path, "Caffe")
    source = str(path)
    if _is_text(data):
        text = data.decode("utf-8")
        try:
            net = _parse_text(text, pb.NetParameter(), source, "a Caffe net")
        except FormatError as net_error:
            try:
                solver = _parse_text(text, pb.SolverParameter(), source, "a Caffe solver")
            except FormatError as solver_error:
                # Report the reading that got further: it is the kind of file this was meant to be.
                furthest = max(net_error, solver_error, key=lambda error: getattr(error, "line", 0) or 0)
                raise furthest from None
            return CaffeFile("solver", solver, upgrade_solver(solver, source))
        if not net.ByteSize():
            raise FormatError(f"{source} holds no Caffe net or solver (only comments or blank lines)",
                              hint="check that this is the file you meant")
        if not len(net.layer) and not len(net.layers):
            try:
                solver = _parse_text(text, pb.SolverParameter(), source, "a Caffe solver")
            except FormatError:  # a net without layers (a name, inputs): still a net
                return CaffeFile("net", net, upgrade_net(net, source))
            return CaffeFile("solver", solver, upgrade_solver(solver, source))
        return CaffeFile("net", net, upgrade_net(net, source))
    if Path(path).suffix == ".solverstate":
        return CaffeFile("solverstate", _parse_solverstate(data, path))
    try:
        net = _parse_caffemodel(data, path)
    except FormatError as model_error:
        try:
            return CaffeFile("solverstate", _parse_solverstate(data, path))
        except FormatError:
            raise model_error from None
    return CaffeFile("caffemodel", net, upgrade_net(net, source))


def write_any(caffe_file: CaffeFile, path: PathLike) -> None:
    """Write a :class:`CaffeFile` back in its own format (text for nets and solvers), atomically."""
    writers = {
        "net": write_net,
        "solver": write_solver,
        "caffemodel": write_caffemodel,
        "solverstate": write_solverstate,
    }
    writers[caffe_file.kind](caffe_file.message, path)


def _is_text(data: bytes) -> bool:
    """Protobuf text is UTF-8 without control characters; binary protobuf is full of them."""
    head = data[:65536]
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not merely a multi-byte character cut by the slice
            return False
    return not any(byte < 32 and byte not in (9, 10, 13) for byte in head)


# --------------------------------------------------------------------------------------------- blobs


def is_legacy_blob(blob: Any) -> bool:
    """True when a BlobProto uses the deprecated 4-D fields (num, channels, height, width)."""
    return any(blob.HasField(f) for f in ("num", "channels", "height", "width"))


def blob_shape(blob: Any) -> List[int]:
    """A BlobProto's shape as Caffe's ``Blob::FromProto`` reads it: the legacy (num, channels, height,
    width) when any of those is set, else the ``shape`` field."""
    if is_legacy_blob(blob):
        return [blob.num, blob.channels, blob.height, blob.width]
    return [int(d) for d in blob.shape.dim]


def blob_to_array(blob: Any, name: str = "blob") -> np.ndarray:
    """A BlobProto's data as a float32 array of its shape (``double_data`` is used when present)."""
    shape = blob_shape(blob)
    field_name = "double_data" if len(blob.double_data) else "data"
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    held = len(getattr(blob, field_name))
    if held != count:
        raise FormatError(
            f"{name}: shape {shape} needs {count} values but the blob holds {held}",
            hint="the weights file is corrupt or was written for another net",
        )
    return _packed_values(blob, field_name).astype(np.float32).reshape(shape)


def array_to_blob(array: Any) -> Any:
    """A BlobProto holding ``array`` as float32 ``data`` with its ``shape`` (the current Caffe layout)."""
    shape = np.shape(array)
    values = np.ascontiguousarray(array, dtype="<f4")  # (at least 1-D: a 0-D array becomes shape (1,))
    blob = pb.BlobProto()
    blob.shape.dim.extend(int(d) for d in shape)
    if values.size:
        payload = values.tobytes()
        blob.MergeFromString(_PACKED_DATA_TAG + _varint(len(payload)) + payload)
    return blob


# Moving millions of floats through protobuf's Python containers one by one takes seconds on protobuf 3.x,
# so blobs go through the wire format, which protobuf defines exactly for these fields (Caffe declares them
# [packed = true]): a tag, the payload's length as a varint, then little-endian IEEE values back to back.
_PACKED_DATA_TAG = bytes([5 << 3 | 2])  # BlobProto.data = 5, wire type 2 (length-delimited)
_ITEM_TYPES = {"data": "<f4", "double_data": "<f8"}


def _packed_values(blob: Any, field_name: str) -> np.ndarray:
    """The values of a packed repeated field of ``blob``, read from its serialised bytes."""
    only = pb.BlobProto()
    only.CopyFrom(blob)
    for other in only.DESCRIPTOR.fields:
        if other.name != field_name:
            only.ClearField(other.name)
    only.DiscardUnknownFields()
    item = np.dtype(_ITEM_TYPES[field_name])
    count = len(getattr(blob, field_name))
    wire = only.SerializeToString()  # tag + length + payload: the payload is the last count * itemsize bytes
    return np.frombuffer(wire[len(wire) - count * item.itemsize:], dtype=item)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def layer_blobs(net: Any) -> Dict[str, List[np.ndarray]]:
    """Each layer's parameter blobs as arrays, by layer name (layers without blobs are left out)."""
    blobs: Dict[str, List[np.ndarray]] = {}
    for layer in net.layer:
        if not len(layer.blobs):
            continue
        if layer.name in blobs:
            raise FormatError(
                f"two layers named '{layer.name}' carry weights",
                hint="layer names must be unique: weights are matched to layers by name",
            )
        blobs[layer.name] = [
            blob_to_array(blob, f"layer '{layer.name}' blob {i}") for i, blob in enumerate(layer.blobs)
        ]
    return blobs
