"""Check an onnxruntime-genai model folder before anything loads it.

`validate_model_dir(folder)` parses model.onnx without its external data
(`onnx.load(..., load_external_data=False)`) and checks, for every tensor stored outside the
protobuf, that its `location` is a plain relative path that stays inside the folder (no absolute
path, no `..`, no symlink that leads out), that the file is a regular file, and that
`offset + length` fits in it and `length` matches the tensor's dtype and shape. Nothing outside
the folder is opened. Problems raise ModelNotFoundError (something missing) or CorruptModelError
(something present but wrong), each saying what to do.

It also returns what a profile or manifest needs from the graph: file sizes, the 4-bit
MatMulNBits settings and an estimate of bits per weight.
"""

from __future__ import annotations

import json
import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

from .errors import CorruptModelError, ModelNotFoundError

GENAI_CONFIG = "genai_config.json"
REEXPORT_HINT = "re-export the folder with `finllm-edge convert ... --formats onnx`"

# ONNX TensorProto.DataType -> bits per element (external data only holds fixed-size types).
_DTYPE_BITS = {
    1: 32, 2: 8, 3: 8, 4: 16, 5: 16, 6: 32, 7: 64, 9: 8, 10: 16, 11: 64, 12: 32, 13: 64,
    14: 64, 15: 128, 16: 16, 17: 8, 18: 8, 19: 8, 20: 8, 21: 4, 22: 4, 23: 4, 24: 8, 25: 2, 26: 2,
}
_NOT_WEIGHTS = ("cos_cache", "sin_cache")  # RoPE tables the builder stores as initializers


@dataclass
class OnnxModelInfo:
    folder: Path
    model_path: Path
    external_files: list[Path]
    size_bytes: int  # model.onnx + its external data files
    genai_config: dict
    op_counts: dict[str, int]
    quant_nodes: list[dict] = field(default_factory=list)  # attributes of each MatMulNBits
    n_params: int = 0
    weight_bytes: int = 0

    @property
    def bits_per_weight(self) -> float:
        return 8.0 * self.weight_bytes / self.n_params if self.n_params else 0.0

    @property
    def precision(self) -> str:
        bits = {q.get("bits") for q in self.quant_nodes}
        return f"int{bits.pop()}" if len(bits) == 1 else ("mixed" if bits else "float")


def _onnx():
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ModelNotFoundError(
            "reading ONNX models needs the `onnx` package: pip install onnx==1.23.2 onnxruntime-genai==0.18.0"
        ) from exc
    _declare_ort_onnx_domain_ops(onnx)
    return onnx


def _declare_ort_onnx_domain_ops(onnx) -> None:
    """Tell onnx.checker about SimplifiedLayerNormalization, which ONNX Runtime registers (as a contrib
    op) in the default ONNX domain and the genai model builder emits there; without its schema the
    checker rejects every builder model. Same signature as ORT's definition (opset 1)."""
    from onnx.defs import OpSchema

    if onnx.defs.has("SimplifiedLayerNormalization", ""):
        return
    floats = ["tensor(float)", "tensor(float16)", "tensor(double)", "tensor(bfloat16)"]
    schema = OpSchema(
        "SimplifiedLayerNormalization", "", 1,
        doc="RMS normalization (ONNX Runtime contrib op in the ONNX domain).",
        inputs=[OpSchema.FormalParameter("X", "T"), OpSchema.FormalParameter("scale", "V")],
        outputs=[
            OpSchema.FormalParameter("Y", "V"),
            OpSchema.FormalParameter("inv_std_var", "U", param_option=OpSchema.FormalParameterOption.Optional),
        ],
        type_constraints=[("T", floats, ""), ("U", ["tensor(float)", "tensor(double)"], ""), ("V", floats, "")],
        attributes=[
            OpSchema.Attribute("axis", onnx.helper.make_attribute("axis", -1), ""),
            OpSchema.Attribute("epsilon", onnx.helper.make_attribute("epsilon", 1e-5), ""),
            OpSchema.Attribute("stash_type", onnx.helper.make_attribute("stash_type", 1), ""),
        ],
    )
    try:
        onnx.defs.register_schema(schema)
    except Exception:  # registered concurrently by another thread: fine
        if not onnx.defs.has("SimplifiedLayerNormalization", ""):
            raise


def _inside(folder_real: str, path: str) -> bool:
    real = os.path.realpath(path)
    return real == folder_real or real.startswith(folder_real + os.sep)


def safe_relative_file(folder: Path, name: str, what: str) -> Path:
    """Resolve `name` inside `folder` or raise CorruptModelError; never follow a path out."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise CorruptModelError(f"{what}: empty or invalid file name {name!r}; {REEXPORT_HINT}")
    posix, win = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or win.is_absolute() or win.drive or name.startswith(("/", "\\")):
        raise CorruptModelError(
            f"{what}: absolute path {name!r} is not allowed (it must be a file inside {folder}); {REEXPORT_HINT}"
        )
    if ".." in posix.parts or ".." in win.parts:
        raise CorruptModelError(f"{what}: path {name!r} climbs out of {folder} with '..'; {REEXPORT_HINT}")
    path = folder / name
    if not _inside(os.path.realpath(folder), str(path)):
        raise CorruptModelError(
            f"{what}: {name!r} resolves to {os.path.realpath(path)}, outside {folder} (a symlink out of the "
            f"folder); copy the real file into the folder or {REEXPORT_HINT}"
        )
    return path


def _regular_size(path: Path, what: str) -> int:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ModelNotFoundError(f"{what}: {path} is missing; copy the whole model folder or {REEXPORT_HINT}") from None
    if not stat.S_ISREG(st.st_mode):
        raise CorruptModelError(f"{what}: {path} is not a regular file; {REEXPORT_HINT}")
    return st.st_size


def _read_genai_config(folder: Path) -> dict:
    path = folder / GENAI_CONFIG
    if not path.is_file():
        raise ModelNotFoundError(
            f"{folder} has no {GENAI_CONFIG}, so it is not an onnxruntime-genai model folder; "
            f"point at the folder written by the ONNX export or {REEXPORT_HINT}"
        )
    safe_relative_file(folder, GENAI_CONFIG, GENAI_CONFIG)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
        cfg["model"]["decoder"]["filename"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptModelError(f"{path} is not a valid genai config ({exc!r}); {REEXPORT_HINT}") from None
    return cfg


def _tensor_bytes(tensor) -> int | None:
    bits = _DTYPE_BITS.get(tensor.data_type)
    if bits is None:
        return None
    return math.ceil(math.prod(tensor.dims) * bits / 8)


def _check_external(folder: Path, tensor, sizes: dict[str, int]) -> None:
    entries = {e.key: e.value for e in tensor.external_data}
    what = f"external data of tensor {tensor.name!r}"
    location = entries.get("location")
    if location is None:
        raise CorruptModelError(f"{what} has no location; {REEXPORT_HINT}")
    path = safe_relative_file(folder, location, what)
    if location not in sizes:
        sizes[location] = _regular_size(path, what)
    size = sizes[location]
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
    except ValueError:
        raise CorruptModelError(f"{what}: offset/length are not integers ({entries}); {REEXPORT_HINT}") from None
    expected = _tensor_bytes(tensor)
    if length is None:
        length = expected if expected is not None else size - offset
    if offset < 0 or length < 0:
        raise CorruptModelError(f"{what}: negative offset/length ({offset}, {length}); {REEXPORT_HINT}")
    if expected is not None and length != expected:
        raise CorruptModelError(
            f"{what}: length {length} does not match its shape {list(tensor.dims)} ({expected} bytes); {REEXPORT_HINT}"
        )
    if offset + length > size:
        raise CorruptModelError(
            f"{what}: bytes {offset}..{offset + length} lie past the end of {location} ({size} bytes): "
            f"the data file is truncated; copy it again or {REEXPORT_HINT}"
        )


def _all_tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _all_tensors(attr.g)
            for g in attr.graphs:
                yield from _all_tensors(g)


def _weights(graph, quant_nodes) -> tuple[int, int]:
    """(logical parameter count, bytes) over the weight initializers; quantized ones counted as K*N."""
    logical: dict[str, int] = {}
    overhead: set[str] = set()
    for node in graph.node:
        if node.op_type == "MatMulNBits":
            attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
            logical[node.input[1]] = attrs.get("K", 0) * attrs.get("N", 0)
            overhead.update(node.input[2:])
    n_params = nbytes = 0
    for init in graph.initializer:
        if init.name in _NOT_WEIGHTS:
            continue
        size = _tensor_bytes(init) or 0
        nbytes += size
        if init.name in logical:
            n_params += logical[init.name]
        elif init.name not in overhead and init.data_type in (1, 10, 16, 11):  # float weights
            n_params += math.prod(init.dims)
    return n_params, nbytes


def validate_model_dir(folder) -> OnnxModelInfo:
    """Check an ONNX model folder; return what is known about it, or raise a typed error."""
    onnx = _onnx()
    folder = Path(folder)
    if not folder.exists():
        raise ModelNotFoundError(f"ONNX model folder not found: {folder}")
    if not folder.is_dir():
        raise ModelNotFoundError(
            f"{folder} is a file; an ONNX model is a folder with model.onnx and {GENAI_CONFIG} (pass the folder)"
        )
    cfg = _read_genai_config(folder)
    model_path = safe_relative_file(folder, cfg["model"]["decoder"]["filename"], f"{GENAI_CONFIG} decoder.filename")
    model_size = _regular_size(model_path, "model file")
    if not (folder / "tokenizer.json").is_file():
        raise ModelNotFoundError(f"{folder} has no tokenizer.json; copy the tokenizer files or {REEXPORT_HINT}")
    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise CorruptModelError(
            f"{model_path} is truncated or not an ONNX model ({type(exc).__name__}: {exc}); {REEXPORT_HINT}"
        ) from None
    graph = model.graph
    if not graph.node or not graph.output:
        raise CorruptModelError(f"{model_path} holds no graph (empty or truncated file); {REEXPORT_HINT}")
    sizes: dict[str, int] = {}
    for tensor in _all_tensors(graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_external(folder, tensor, sizes)
    try:  # by path, so the checker resolves external data against the folder (already vetted above)
        onnx.checker.check_model(str(model_path))
    except Exception as exc:
        raise CorruptModelError(f"{model_path} fails the ONNX checker ({exc}); {REEXPORT_HINT}") from None
    op_counts: dict[str, int] = {}
    quant_nodes = []
    for node in graph.node:
        op_counts[node.op_type] = op_counts.get(node.op_type, 0) + 1
        if node.op_type == "MatMulNBits":
            quant_nodes.append({a.name: a.i for a in node.attribute if a.type == a.INT} | {"name": node.name})
    n_params, weight_bytes = _weights(graph, quant_nodes)
    return OnnxModelInfo(
        folder=folder, model_path=model_path,
        external_files=[folder / name for name in sorted(sizes)],
        size_bytes=model_size + sum(sizes.values()), genai_config=cfg, op_counts=op_counts,
        quant_nodes=quant_nodes, n_params=n_params, weight_bytes=weight_bytes,
    )
