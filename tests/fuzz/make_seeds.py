#!/usr/bin/env python3
"""Write small valid seed files for the weight-file fuzz targets.

Usage:
    tests/fuzz/make_seeds.py OUT_DIR

creates OUT_DIR/safetensors/ and OUT_DIR/llmc/. To build and run the targets
(libFuzzer needs clang):

    cmake -S . -B /tmp/fuzzst -DQUADC_FUZZ=ON -DCMAKE_C_COMPILER=clang-19 \\
        -DCMAKE_CXX_COMPILER=clang++-19
    cmake --build /tmp/fuzzst --target fuzz_safetensors fuzz_llmc
    tests/fuzz/make_seeds.py /tmp/fuzzst/seeds
    mkdir -p /tmp/fuzzst/corpus_st /tmp/fuzzst/corpus_llmc
    /tmp/fuzzst/tests/fuzz_safetensors -max_total_time=60 \
        -dict=tests/fuzz/safetensors.dict /tmp/fuzzst/corpus_st /tmp/fuzzst/seeds/safetensors
    /tmp/fuzzst/tests/fuzz_llmc -max_total_time=60 /tmp/fuzzst/corpus_llmc /tmp/fuzzst/seeds/llmc

QUADC_FUZZ instruments quadc_core too, so the fuzzer records coverage
inside the readers and not only in the target file.
"""

import json
import os
import random
import struct
import sys

# Must match FUZZ_CONFIG in fuzz_llmc.c.
MAX_T, V, VP, L, NH, C = 3, 5, 8, 1, 2, 4


def safetensors_bytes(tensors, metadata=None):
    """Serialize [(name, dtype, shape, raw bytes)] like quadc's writer."""
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors)


def floats(count, rng):
    return struct.pack(f"<{count}f", *(rng.uniform(-1, 1) for _ in range(count)))


def gpt2_tensors(rng, prefix=""):
    """Hugging Face GPT-2 tensors of the fuzz config, in Hugging Face order."""
    shapes = [("wte.weight", [V, C]), ("wpe.weight", [MAX_T, C])]
    for i in range(L):
        for suffix, shape in [
            ("ln_1.weight", [C]), ("ln_1.bias", [C]),
            ("attn.c_attn.weight", [C, 3 * C]), ("attn.c_attn.bias", [3 * C]),
            ("attn.c_proj.weight", [C, C]), ("attn.c_proj.bias", [C]),
            ("ln_2.weight", [C]), ("ln_2.bias", [C]),
            ("mlp.c_fc.weight", [C, 4 * C]), ("mlp.c_fc.bias", [4 * C]),
            ("mlp.c_proj.weight", [4 * C, C]), ("mlp.c_proj.bias", [C]),
        ]:
            shapes.append((f"h.{i}.{suffix}", shape))
    shapes += [("ln_f.weight", [C]), ("ln_f.bias", [C])]
    result = []
    for name, shape in shapes:
        count = 1
        for dim in shape:
            count *= dim
        result.append((prefix + name, "F32", shape, floats(count, rng)))
    return result


def llmc_parameters(rng):
    """Float32 parameters of the fuzz config in llm.c checkpoint order."""
    counts = [VP * C, MAX_T * C] + [L * n for n in
              (C, C, 3 * C * C, 3 * C, C * C, C, C, C, 4 * C * C, 4 * C, 4 * C * C, C)] + [C, C]
    data = b""
    for index, count in enumerate(counts):
        values = [rng.uniform(-1, 1) for _ in range(count)]
        if index == 0:
            values[V * C:] = [0.0] * ((VP - V) * C)  # padding rows are zero
        data += struct.pack(f"<{count}f", *values)
    return data, sum(counts)


def header(*values):
    return struct.pack("<256i", *values, *([0] * (256 - len(values))))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    rng = random.Random(1)
    st_dir = os.path.join(out, "safetensors")
    llmc_dir = os.path.join(out, "llmc")
    os.makedirs(st_dir, exist_ok=True)
    os.makedirs(llmc_dir, exist_ok=True)

    def write(directory, name, data):
        with open(os.path.join(directory, name), "wb") as f:
            f.write(data)

    write(st_dir, "gpt2.safetensors", safetensors_bytes(gpt2_tensors(rng), {"format": "pt"}))
    prefixed = gpt2_tensors(rng, "transformer.")
    prefixed.append(("transformer.h.0.attn.bias", "F32", [1, 1, MAX_T, MAX_T],
                     bytes(4 * MAX_T * MAX_T)))
    prefixed.append(("lm_head.weight", "F32", [V, C], prefixed[0][3]))
    write(st_dir, "prefixed.safetensors", safetensors_bytes(prefixed))
    write(st_dir, "dtypes.safetensors", safetensors_bytes([
        ("half", "F16", [2, 2], struct.pack("<4H", 0x3C00, 0xC000, 0x7BFF, 0x0001)),
        ("brain", "BF16", [3], struct.pack("<3H", 0x3F80, 0x7F80, 0xFFC1)),
        ("i8", "I8", [3], bytes([0x80, 0x7F, 0x01])),
        ("u8", "U8", [1, 2], bytes([0, 255])),
        ("i32", "I32", [2], struct.pack("<2i", -7, 1 << 30)),
        ("scalar", "I64", [], struct.pack("<q", -42)),
        ("empty", "F32", [0, 3], b""),
        ("quote\"back\\slash\n\u00e9", "U8", [1], b"\x05"),
    ], {"note": "caf\u00e9", "format": "pt"}))

    parameters, count = llmc_parameters(rng)
    write(llmc_dir, "model.bin", header(20240326, 3, MAX_T, V, L, NH, C, VP) + parameters)
    write(llmc_dir, "tokens.bin", header(20240520, 1, 6) + struct.pack("<6H", 50256, 0, 1, 2, 3, 65535))
    write(llmc_dir, "empty_tokens.bin", header(20240520, 1, 0))
    batch, seq = 1, 2
    inputs = struct.pack(f"<{batch * seq}i", *(rng.randrange(V) for _ in range(batch * seq)))
    targets = struct.pack(f"<{batch * seq}i", *(rng.randrange(V) for _ in range(batch * seq)))
    logits = floats(batch * seq * V, rng)
    grads, _ = llmc_parameters(rng)
    write(llmc_dir, "debug_state.bin", header(20240327, 2, batch, seq) + inputs + targets + logits +
          struct.pack("<f", 1.5) + grads)
    print(f"wrote seeds for {count} llm.c parameters to {out}")


if __name__ == "__main__":
    main()
