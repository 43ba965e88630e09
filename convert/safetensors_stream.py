"""Write a .safetensors file one tensor at a time (the header is known up front from shapes).

The file is written under a temporary name and renamed on close (see atomic.py), so a
crash never leaves a model.safetensors that looks complete.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

from .atomic import commit, partial_name

_ST_DTYPE = {"float16": ("F16", 2), "bfloat16": ("BF16", 2), "float32": ("F32", 4)}


class StreamingSafetensorsWriter:
    def __init__(self, path: Path, layout: dict[str, tuple[tuple[int, ...], str]], metadata: dict | None = None):
        """`layout`: name -> (shape, dtype name) in the order the tensors will be written."""
        self.path = Path(path)
        self.tmp = partial_name(self.path)
        self._order = list(layout)
        header: dict = {"__metadata__": dict(metadata or {})}
        self._expected: dict[str, int] = {}
        offset = 0
        for name, (shape, dtype) in layout.items():
            code, size = _ST_DTYPE[dtype]
            nbytes = math.prod(shape) * size
            header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._expected[name] = nbytes
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._header = struct.pack("<Q", len(raw)) + raw
        self._next = 0
        self._f = None

    def __enter__(self):
        self._f = open(self.tmp, "wb")
        self._f.write(self._header)
        return self

    def write(self, name: str, tensor) -> None:
        if self._next >= len(self._order) or self._order[self._next] != name:
            raise ValueError(f"tensor {name!r} written out of order")
        data = tensor.contiguous().view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes() \
            if str(tensor.dtype) == "torch.bfloat16" else tensor.contiguous().numpy().tobytes()
        if len(data) != self._expected[name]:
            raise ValueError(f"tensor {name!r} has {len(data)} bytes, header says {self._expected[name]}")
        self._f.write(data)
        self._next += 1

    def __exit__(self, exc_type, exc, tb):
        self._f.close()
        if exc_type is not None or self._next != len(self._order):
            self.tmp.unlink(missing_ok=True)
            if exc_type is None:
                raise ValueError(f"only {self._next} of {len(self._order)} tensors were written")
            return False
        commit(self.tmp, self.path)
        return False
