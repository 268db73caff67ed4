"""st.py: a small safetensors reader/writer for the test tools (Debian ships no python
safetensors). Writes what huggingface/safetensors writes: 8-byte LE header length, JSON header
padded with spaces to a multiple of 8, tensors in order of descending dtype size then name."""
import json
import struct

import numpy as np

_DT = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "U64": np.uint64, "I32": np.int32,
    "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_,
}
_NP = {np.dtype(v): k for k, v in _DT.items()}


def _to_numpy(t):
    if hasattr(t, "detach"):  # torch tensor
        import torch
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16), "BF16"
        t = t.numpy()
    a = np.ascontiguousarray(t)
    return a, _NP[a.dtype]


def save(path, tensors, metadata=None):
    """tensors: dict name -> numpy array or torch tensor (bf16 kept as BF16)."""
    items = []
    for name, t in tensors.items():
        a, dt = _to_numpy(t)
        items.append((name, a, dt))
    items.sort(key=lambda x: (-x[1].dtype.itemsize, x[0]))
    header, off = {}, 0
    for name, a, dt in items:
        n = a.nbytes
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + n]}
        off += n
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for _, a, _ in items:
            f.write(a.tobytes())


def load(path):
    """Returns (dict name -> numpy array, metadata dict). BF16 comes back as float32."""
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    out = {}
    base = 8 + n
    for name, info in header.items():
        b, e = info["data_offsets"]
        raw = buf[base + b:base + e]
        if info["dtype"] == "BF16":
            u = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            a = u.view(np.float32)
        else:
            a = np.frombuffer(raw, dtype=_DT[info["dtype"]])
        out[name] = a.reshape(info["shape"]).copy()
    return out, meta
