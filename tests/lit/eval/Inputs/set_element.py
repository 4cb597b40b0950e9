#!/usr/bin/env python3
"""Overwrites element 0 of one f32 tensor of a safetensors file in place.

usage: set_element.py FILE TENSOR VALUE   (VALUE is a float, e.g. 0, nan, inf)
"""
import json
import struct
import sys

path, name, value = sys.argv[1], sys.argv[2], float(sys.argv[3])
with open(path, "r+b") as f:
    header_len = struct.unpack("<Q", f.read(8))[0]
    header = json.loads(f.read(header_len))
    entry = header[name]
    if entry["dtype"] != "F32":
        sys.exit(f"set_element.py: tensor {name} is {entry['dtype']}, not F32")
    f.seek(8 + header_len + entry["data_offsets"][0])
    f.write(struct.pack("<f", value))
