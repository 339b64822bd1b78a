"""Bytes that are not (quite) a protobuf message, for every method's request.

Sent with identity serializers, so the server's own decoding is what gets exercised: random
bytes, valid messages truncated or with flipped bits, and the classic malformed encodings
(bad UTF-8 in a string field, an 11-byte varint, a length past the end, groups nested past any
recursion limit, field number 0).
"""

from __future__ import annotations

import random

from google.protobuf import message as pbmessage
from google.protobuf.descriptor import FieldDescriptor


def varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # negative int32/int64 are sent as 10-byte two's complement
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def tag(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def _string_field(cls: type[pbmessage.Message]) -> int:
    for f in cls.DESCRIPTOR.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            return int(f.number)
    return 1


def garbage(rng: random.Random, cls: type[pbmessage.Message], valid: bytes) -> tuple[bytes, str]:
    """Malformed bytes for a request of type `cls`, built from `valid` (one of its valid encodings)."""
    kind = rng.choices(
        [
            "random-short",
            "random-long",
            "random-huge",
            "truncated",
            "bitflip",
            "bad-utf8",
            "varint-overflow",
            "length-past-end",
            "wrong-wire-type",
            "nested-groups",
            "field-zero",
            "stray-end-group",
            "unknown-fields",
            "empty",
        ],
        weights=[4, 3, 1, 3, 4, 2, 1, 2, 2, 1, 1, 1, 1, 1],
    )[0]
    string_field = _string_field(cls)
    if kind == "random-short":
        data = rng.randbytes(rng.randint(1, 64))
    elif kind == "random-long":
        data = rng.randbytes(rng.randint(65, 16_384))
    elif kind == "random-huge":
        data = rng.randbytes(rng.choice([1 << 20, 4 << 20]))
    elif kind == "truncated":
        data = valid[: rng.randrange(len(valid))] if len(valid) > 1 else b"\x0a\x05ab"
    elif kind == "bitflip":
        buf = bytearray(valid or b"\x00")
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        data = bytes(buf)
    elif kind == "bad-utf8":
        body = rng.choice([b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"ok\x80"])  # overlong, surrogate...
        data = valid + tag(string_field, 2) + varint(len(body)) + body
    elif kind == "varint-overflow":
        data = tag(rng.randint(1, 12), 0) + b"\xff" * 11
    elif kind == "length-past-end":
        data = tag(string_field, 2) + varint(rng.choice([100, 2**31, 2**32 + 5, 2**63])) + b"abc"
    elif kind == "wrong-wire-type":
        data = tag(string_field, rng.choice([0, 1, 5])) + b"\x01" * 8
    elif kind == "nested-groups":
        depth = rng.choice([101, 1_000, 100_000])
        data = tag(rng.randint(20, 30), 3) * depth + tag(rng.randint(20, 30), 4) * depth
    elif kind == "field-zero":
        data = b"\x00\x01" + valid
    elif kind == "stray-end-group":
        data = valid + tag(rng.randint(1, 12), 4)
    elif kind == "unknown-fields":
        # Decodable: unknown fields are kept, not refused; the request must be served as `valid`.
        data = valid + b"".join(tag(rng.randint(1000, 5000), 0) + varint(i) for i in range(100))
    else:
        data = b""
    return data, kind


def decodes(cls: type[pbmessage.Message], data: bytes) -> pbmessage.Message | None:
    """The message `data` is, as the server's protobuf runtime (upb, like ours) reads it."""
    try:
        return cls.FromString(data)
    except Exception:  # DecodeError, RecursionError: whatever the runtime raises is "undecodable"
        return None
