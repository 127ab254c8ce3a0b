#!/usr/bin/python3
"""PyTorch side of plait's checkpoint interoperability test (tests/test_checkpoint.c runs it).

Debian has no python3-safetensors, so this file reads and writes the format with numpy alone.
Activations cross the boundary as raw little-endian float32: the input NHWC (plait's layout),
the logits [n, classes].

  torch_interop.py check                      exit 0 when torch and torchvision import
  torch_interop.py to-torch CKPT ARCH CLASSES INPUT N H W LOGITS
      load a plait checkpoint (optimizer.* dropped) into torchvision's ARCH with strict=True and
      write its eval-mode logits for INPUT
  torch_interop.py from-torch OUT ARCH CLASSES SEED INPUT N H W LOGITS
      save a seeded torchvision ARCH (BN statistics randomized) as safetensors, write its logits
  torch_interop.py both CKPT ARCH CLASSES INPUT N H W LOGITS OUT SEED OUT_LOGITS
      to-torch then from-torch in one process (importing torch takes seconds)
"""
import json
import struct
import sys

import numpy as np

DTYPES = {
    "BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16,
    "F16": np.float16, "I32": np.int32, "U32": np.uint32, "F32": np.float32, "F64": np.float64,
    "I64": np.int64, "U64": np.uint64,
}
NAMES = {np.dtype(v).str[1:]: k for k, v in DTYPES.items()}


def safetensors_load(path):
    with open(path, "rb") as f:
        data = f.read()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    metadata = header.pop("__metadata__", {})
    buffer = memoryview(data)[8 + length:]
    covered = 0
    tensors = {}
    for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"]):
        begin, end = entry["data_offsets"]
        if begin != covered:
            raise ValueError(f"{path}: tensor {name} does not start where the previous one ends")
        covered = end
        dtype = np.dtype(DTYPES[entry["dtype"]]).newbyteorder("<")
        tensors[name] = np.frombuffer(buffer[begin:end], dtype=dtype).reshape(entry["shape"]).copy()
    if covered != len(buffer):
        raise ValueError(f"{path}: data buffer not covered exactly")
    return tensors, metadata


def safetensors_save(path, tensors, metadata=None):
    header = {"__metadata__": metadata} if metadata else {}
    blobs, offset = [], 0
    for name, array in tensors.items():
        array = np.array(array, order="C")  # ascontiguousarray would turn 0-d into 1-d
        blob = array.astype(array.dtype.newbyteorder("<")).tobytes()
        header[name] = {"dtype": NAMES[array.dtype.str[1:]], "shape": list(array.shape),
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def read_input(path, n, h, w):
    nhwc = np.fromfile(path, dtype="<f4").reshape(n, h, w, 3)
    return np.ascontiguousarray(nhwc.transpose(0, 3, 1, 2))


def logits(model, input_nchw, path):
    import torch
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(input_nchw)).numpy().astype("<f4")
    out.tofile(path)


def build(arch, classes):
    import torchvision
    return getattr(torchvision.models, arch)(num_classes=classes)


def to_torch(checkpoint, arch, classes, input_path, n, h, w, logits_path):
    import torch
    tensors, metadata = safetensors_load(checkpoint)
    if metadata.get("model") != arch:
        raise ValueError(f"{checkpoint} is for {metadata.get('model')}")
    state = {k: torch.from_numpy(v) for k, v in tensors.items() if not k.startswith("optimizer.")}
    model = build(arch, int(classes))
    model.load_state_dict(state, strict=True)  # raises on a missing, unexpected or misshapen tensor
    logits(model, read_input(input_path, n, h, w), logits_path)


def from_torch(out, arch, classes, seed, input_path, n, h, w, logits_path):
    import torch
    torch.manual_seed(seed)
    model = build(arch, int(classes))
    # Fresh BN layers are the identity in eval mode; random statistics make the test see them.
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
            module.num_batches_tracked.fill_(seed)
    safetensors_save(out, {k: v.detach().numpy() for k, v in model.state_dict().items()})
    logits(model, read_input(input_path, n, h, w), logits_path)


def main(argv):
    if argv[1] == "check":
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    elif argv[1] == "to-torch":
        c, arch, classes, inp, n, h, w, out = argv[2:]
        to_torch(c, arch, classes, inp, int(n), int(h), int(w), out)
    elif argv[1] == "from-torch":
        c, arch, classes, seed, inp, n, h, w, out = argv[2:]
        from_torch(c, arch, classes, int(seed), inp, int(n), int(h), int(w), out)
    elif argv[1] == "both":
        c, arch, classes, inp, n, h, w, out, c2, seed, out2 = argv[2:]
        to_torch(c, arch, classes, inp, int(n), int(h), int(w), out)
        from_torch(c2, arch, classes, int(seed), inp, int(n), int(h), int(w), out2)
    else:
        raise SystemExit(f"unknown command {argv[1]}")


if __name__ == "__main__":
    main(sys.argv)
