"""Write random GPT-2 weights as a safetensors file for the eval and
generate tests, with the parameter names and shapes of examples/gpt2.qd.

usage: make_weights.py OUT n_layer n_embd n_vocab n_ctx [--meta k=v]...
       [--drop NAME]... [--extra NAME]

Values are uniform in [-0.05, 0.05) from a fixed linear congruential
generator, so the file is the same on every run.
"""
import json
import struct
import sys


def param_shapes(n_layer, c, v, n_ctx):
    shapes = [("wte.weight", [v, c]), ("wpe.weight", [n_ctx, c])]
    for i in range(n_layer):
        p = f"h.{i}."
        shapes += [
            (p + "ln_1.weight", [c]), (p + "ln_1.bias", [c]),
            (p + "attn.c_attn.weight", [c, 3 * c]), (p + "attn.c_attn.bias", [3 * c]),
            (p + "attn.c_proj.weight", [c, c]), (p + "attn.c_proj.bias", [c]),
            (p + "ln_2.weight", [c]), (p + "ln_2.bias", [c]),
            (p + "mlp.c_fc.weight", [c, 4 * c]), (p + "mlp.c_fc.bias", [4 * c]),
            (p + "mlp.c_proj.weight", [4 * c, c]), (p + "mlp.c_proj.bias", [c]),
        ]
    return shapes + [("ln_f.weight", [c]), ("ln_f.bias", [c])]


def main(argv):
    out, n_layer, c, v, n_ctx = argv[1], *map(int, argv[2:6])
    meta, drop, extra = {}, set(), []
    rest = argv[6:]
    while rest:
        flag, value, rest = rest[0], rest[1], rest[2:]
        if flag == "--meta":
            key, _, text = value.partition("=")
            meta[key] = text
        elif flag == "--drop":
            drop.add(value)
        elif flag == "--extra":
            extra.append((value, [2]))
    tensors = [t for t in param_shapes(n_layer, c, v, n_ctx) if t[0] not in drop] + extra

    state = 12345
    header, blobs, offset = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, shape in tensors:
        count = 1
        for d in shape:
            count *= d
        values = []
        for _ in range(count):
            state = (state * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            values.append(((state >> 40) / float(1 << 24) - 0.5) * 0.1)
        if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name == "ln_f.weight":
            values = [1.0 + x for x in values]
        blob = struct.pack(f"<{count}f", *values)
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(out, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)


main(sys.argv)
