"""Raw protobuf: reading a model file's fields without parsing its weights (:func:`light_bytes`), copying
messages field by field, and the weightless view shape inference works on (:func:`weightless`)."""

from __future__ import annotations

from onnx import ModelProto, TensorProto

from .errors import InputError
from .tensors import (
    is_external,
    tensor_nbytes,
)

_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9


PROTOBUF_LIMIT = 2**31 - 1


SELF_REF_BYTES = 1 << 16  # inline raw data larger than this is left in the file, referenced by offset


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _fields(buf, start: int, end: int):
    """(field number, wire type, field start, value start, value end) of each field in buf[start:end]."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:  # not a protobuf field: a data file of zeros ends the scan here, not 2 bytes at a time
            raise ValueError("field number 0")
        if wire == 0:
            _, pos = _varint(buf, pos)
            yield number, wire, field_start, field_start, pos
            continue
        if wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        elif wire == 2:
            n, vstart = _varint(buf, pos)
            pos = vstart + n
            if pos > end:
                raise ValueError("field runs past its message")
            yield number, wire, field_start, vstart, pos
            continue
        else:
            raise ValueError(f"wire type {wire}")
        if pos > end:
            raise ValueError("field runs past its message")
        yield number, wire, field_start, field_start, pos


def _message(number: int, content: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(content)) + content


def light_bytes(buf) -> tuple[bytes, list[tuple[int, int, int]]]:
    """The model's bytes with every main-graph initializer's large raw data left out, and for each
    such initializer (index among the initializers, offset of its data in ``buf``, length)."""
    refs: list[tuple[int, int, int]] = []
    out = bytearray()
    k = 0
    for number, wire, fs, vs, ve in _fields(buf, 0, len(buf)):
        if number != _GRAPH or wire != 2:
            out += buf[fs:ve]
            continue
        graph = bytearray()
        for gn, gw, gfs, gvs, gve in _fields(buf, vs, ve):
            if gn != _INITIALIZER or gw != 2:
                graph += buf[gfs:gve]
                continue
            tensor, skipped, raws = bytearray(), None, 0
            for tn, tw, tfs, tvs, tve in _fields(buf, gvs, gve):
                raws += tn == _RAW_DATA
                if raws > 1:
                    raise InputError(f"initializer {k} holds two raw_data fields: protobuf and onnx read such a "
                                     "tensor differently; refused as hostile input")
                if tn == _RAW_DATA and tw == 2 and tve - tvs > SELF_REF_BYTES:
                    skipped = (k, tvs, tve - tvs)
                else:
                    tensor += buf[tfs:tve]
            graph += _message(_INITIALIZER, bytes(tensor)) if skipped else buf[gfs:gve]
            if skipped:
                refs.append(skipped)
            k += 1
        out += _message(_GRAPH, bytes(graph))
    return bytes(out), refs


def _repeated(fd) -> bool:
    rep = getattr(fd, "is_repeated", None)
    return rep if rep is not None else fd.label == fd.LABEL_REPEATED


def copy_fields(src, dst, skip=()) -> None:
    """Copy every set field of protobuf message ``src`` into ``dst``, except those named in ``skip``."""
    for fd, value in src.ListFields():
        if fd.name in skip:
            continue
        if _repeated(fd):
            getattr(dst, fd.name).extend(value)
        elif fd.message_type is not None:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _stubbed(t: TensorProto, keep_bytes: int) -> bool:
    size = tensor_nbytes(t) if t.data_type != TensorProto.STRING else None
    return not (size is None or size <= keep_bytes or is_external(t))


def light_view(model: ModelProto, keep_bytes: int = 4096) -> ModelProto:
    """What :func:`weightless` makes, for readers that change nothing: ``model`` itself where it would
    stub no initializer (a graph of 32,000 nodes and small weights is not copied), else its copy."""
    if not any(_stubbed(t, keep_bytes) for t in model.graph.initializer):
        return model
    return weightless(model, keep_bytes)[0]


def weightless(model: ModelProto, keep_bytes: int = 4096) -> tuple[ModelProto, dict[int, TensorProto]]:
    """A copy of ``model`` whose large main-graph initializers are stubs: name, type and dims, no data.

    Returns the copy and, for each stub, its position among the main graph's initializers and the
    original tensor. Shape inference needs dims
    only (and small constants, for data propagation); the saver fills stubs in from the originals one
    at a time. Either way the weights are never copied as a whole.
    """
    light = ModelProto()
    copy_fields(model, light, skip=("graph",))
    copy_fields(model.graph, light.graph, skip=("initializer",))
    stubs = {}
    for i, t in enumerate(model.graph.initializer):
        if not _stubbed(t, keep_bytes):  # sized from dims: no bytes touched
            light.graph.initializer.append(t)
        else:
            stub = light.graph.initializer.add()
            stub.name, stub.data_type, stub.doc_string = t.name, t.data_type, t.doc_string
            stub.dims.extend(t.dims)
            stubs[i] = t
    return light, stubs
