"""Mutations of protobuf messages, driven by their descriptors.

`field_paths(descriptor)` lists every field reachable from a request type (nested messages down
to MAX_DEPTH, one level of recursion into a type already on the path), so no field is ever
hand-listed and a field added to the protos is fuzzed the day it appears. `mutate(message,
path, rng, pool)` changes the field at the end of a path by its type and says what it did, in
words short enough to group failures by ("tags: huge-values-6x3145728B").
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from google.protobuf import message as pbmessage
from google.protobuf.descriptor import Descriptor, FieldDescriptor

# Deep enough for WorkflowResponse.actions[].completeWorkflow.carryoverEvents[].eventRaised.input,
# shallow enough that HistoryEvent's 20 kinds do not drown every other field.
MAX_DEPTH = 5
# A mutation that would take a request above this is not applied: memory stays modest, with
# room above MongoDB's 16 MB document limit, which is what the largest mutations are after.
MAX_MESSAGE_BYTES = 20 * 1024 * 1024
# Over the fuzz server's payload limit (256 KiB), a few MB (several in one map: over 16 MB),
# and, rarely, one value over MongoDB's 16 MB document limit on its own.
HUGE_SIZES = (300 * 1024, 1024 * 1024, 3 * 1024 * 1024)
HUGEST = 17 * 1024 * 1024
TIMESTAMP = "google.protobuf.Timestamp"

_YEAR_1 = -62135596800  # 0001-01-01T00:00:00Z, the smallest valid Timestamp
_YEAR_10000 = 253402300800  # 10000-01-01T00:00:00Z, one past the largest
_INT64_MAX = 2**63 - 1
_INT64_MIN = -(2**63)
_INT32_MAX = 2**31 - 1
_INT32_MIN = -(2**31)


@dataclass(frozen=True)
class FieldPath:
    fields: tuple[FieldDescriptor, ...]

    def __str__(self) -> str:
        return ".".join(f.name + ("[]" if f.is_repeated and not _is_map(f) else "") for f in self.fields)

    @property
    def leaf(self) -> FieldDescriptor:
        return self.fields[-1]


def _real_oneof(f: FieldDescriptor) -> str | None:
    """The oneof a field belongs to, but not the synthetic one of a proto3 `optional` field."""
    o = f.containing_oneof
    if o is None or (len(o.fields) == 1 and o.name == "_" + f.name):
        return None
    return str(o.name)


def _is_map(f: FieldDescriptor) -> bool:
    return f.type == FieldDescriptor.TYPE_MESSAGE and f.message_type.GetOptions().map_entry


def field_paths(descriptor: Descriptor) -> list[FieldPath]:
    return [FieldPath(p) for p in _walk(descriptor, (), ())]


def _walk(
    desc: Descriptor, prefix: tuple[FieldDescriptor, ...], chain: tuple[str, ...]
) -> Iterator[tuple[FieldDescriptor, ...]]:
    chain = (*chain, desc.full_name)
    for f in desc.fields:
        path = (*prefix, f)
        yield path
        if f.type != FieldDescriptor.TYPE_MESSAGE or _is_map(f) or f.message_type.full_name == TIMESTAMP:
            continue  # leaves: mutated whole (maps, timestamps) or by value
        if len(path) >= MAX_DEPTH or chain.count(f.message_type.full_name) >= 2:
            continue  # TaskFailureDetails.innerFailure.innerFailure... is one level, not forever
        yield from _walk(f.message_type, path, chain)


# -- values ---------------------------------------------------------------------------------------


def huge_string(rng: random.Random, size: int | None = None) -> tuple[str, str]:
    size = size or (HUGEST if rng.random() < 0.1 else rng.choice(HUGE_SIZES))
    unit = rng.choice(["x", "é", "東", "🙂"])  # 1-4 bytes a character: byte limits, not char limits
    return unit * max(1, size // len(unit.encode())), f"huge-{size}B"


_CONTROL = ["\x01", "\x07", "\x1b[31m", "\n", "\r", "\t", "\x7f", "\x1f", "\u0085", "\u2028"]
_UNICODE = [
    "ümlaut-ß-東京",
    "🙂🙃" * 3,
    "\u202eevil",  # right-to-left override
    "e\u0301" * 40,  # combining marks
    "\ufeffbom",
    "\U0010ffff",
    "\u00a0nbsp",
    "Ω≈ç√∫",
]
_INJECTION = ["$gt", "a.b", "$where", "%s%s%n", "{0}{1}", "'; DROP TABLE instances;--", "..", "a/../b", "*"]


def string_value(rng: random.Random, pool: Sequence[str]) -> tuple[str, str]:
    """A hostile or boundary string and its label."""
    base = rng.choice(pool) if pool else "x"
    kind = rng.choices(
        ["empty", "blank", "nul", "control", "unicode", "slash", "boundary", "huge", "pool", "injection"],
        weights=[2, 1, 2, 2, 2, 1, 2, 1, 4, 1],
    )[0]
    if kind == "empty":
        return "", "empty"
    if kind == "blank":
        return rng.choice([" ", "   ", "\t", "\u3000"]), "blank"
    if kind == "nul":
        return rng.choice(["\x00", base + "\x00", "\x00" + base, base + "\x00" + base]), "nul"
    if kind == "control":
        c = rng.choice(_CONTROL)
        return base + c + base, f"control-{c!r}"
    if kind == "unicode":
        return rng.choice(_UNICODE), "unicode"
    if kind == "slash":
        return rng.choice(["/", base + "/x", "a/b"]), "slash"
    if kind == "boundary":
        n = rng.choice([256, 257, 1024, 1025, 4096, 65_536])
        return "b" * n, f"len-{n}"
    if kind == "huge":
        return huge_string(rng)
    if kind == "injection":
        return rng.choice(_INJECTION), "injection"
    return base, "pool"


def _int_values(f: FieldDescriptor) -> list[int]:
    t = f.type
    if t in (FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SFIXED32):
        return [0, -1, 1, _INT32_MAX, _INT32_MIN]
    if t in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return [0, -1, _INT64_MAX, _INT64_MIN, 2**53 + 1]
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return [0, 1, 2**31, 2**32 - 1]
    return [0, 1, 2**63, 2**64 - 1]  # uint64 / fixed64


def scalar_value(f: FieldDescriptor, rng: random.Random, pool: Sequence[str]) -> tuple[object, str]:
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return string_value(rng, pool)
    if t == FieldDescriptor.TYPE_BYTES:
        choice = rng.choice(["empty", "nul", "binary", "huge"])
        if choice == "huge":
            size = rng.choice(HUGE_SIZES)
            return b"\xff" * size, f"huge-{size}B"
        return {"empty": b"", "nul": b"\x00", "binary": bytes(range(256))}[choice], choice
    if t == FieldDescriptor.TYPE_BOOL:
        v = rng.random() < 0.5
        return v, str(v).lower()
    if t == FieldDescriptor.TYPE_ENUM:
        # proto3 enums are open: a value no SDK knows is valid on the wire.
        values = [v.number for v in f.enum_type.values] + [-1, 99, _INT32_MAX]
        v = rng.choice(values)
        known = f.enum_type.values_by_number.get(v)
        return v, known.name if known else f"unknown-{v}"
    if t in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        v = rng.choice([math.nan, math.inf, -math.inf, -0.0, 1e308])
        return v, repr(v)
    v = rng.choice(_int_values(f))
    return v, str(v)


def timestamp_value(rng: random.Random) -> tuple[int, int, str]:
    """Out-of-range timestamps (what the issue names), mostly, and the valid extremes next to them."""
    now = int(time.time())
    invalid = [
        (_YEAR_1 - 366 * 86400, 0, "year-0"),
        (_YEAR_10000, 0, "year-10000"),
        (_INT64_MAX, 0, "seconds-int64-max"),
        (_INT64_MIN, 0, "seconds-int64-min"),
        (now, -1, "nanos-negative"),
        (now, 10**9, "nanos-1e9"),
        (now, _INT32_MAX, "nanos-int32-max"),
        (now, _INT32_MIN, "nanos-int32-min"),
    ]
    valid = [
        (_YEAR_1, 0, "year-1"),
        (_YEAR_10000 - 1, 999_999_999, "year-9999-end"),
        (0, 0, "epoch"),
        (now - 86400, 0, "yesterday"),
        (now + 1, 0, "in-1s"),
        (now + 100 * 365 * 86400, 0, "in-100-years"),
    ]
    return rng.choice(invalid if rng.random() < 0.7 else valid)


# -- applying a mutation --------------------------------------------------------------------------


def _holder(root: pbmessage.Message, path: FieldPath, rng: random.Random) -> pbmessage.Message:
    """The message that owns the path's last field, creating what is missing on the way.

    In a repeated field an element of the right oneof kind is preferred, so that mutating
    actions[].createTimer.fireAt changes a timer, not a scheduleTask turned into a timer."""
    msg = root
    fields = path.fields
    for i, f in enumerate(fields[:-1]):
        if f.is_repeated:
            items = getattr(msg, f.name)
            nxt = fields[i + 1]
            oneof = _real_oneof(nxt)
            fit = [m for m in items if oneof is None or m.WhichOneof(oneof) == nxt.name]
            msg = rng.choice(fit) if fit else items.add()
        else:
            sub = getattr(msg, f.name)
            sub.SetInParent()  # also selects it in its oneof
            msg = sub
    return msg


def _room(root: pbmessage.Message) -> int:
    return max(0, MAX_MESSAGE_BYTES - root.ByteSize())


def _mutate_map(holder: pbmessage.Message, f: FieldDescriptor, rng: random.Random, room: int) -> str:
    entries = getattr(holder, f.name)
    value_is_message = f.message_type.fields_by_name["value"].type == FieldDescriptor.TYPE_MESSAGE
    kind = rng.choice(["many-entries", "huge-values", "huge-key", "bad-keys", "clear"])
    if kind == "clear" or value_is_message:
        entries.clear()
        return "clear"
    if kind == "many-entries":
        n = min(rng.choice([1_000, 20_000, 100_000]), room // 16)
        entries.update({f"k{i}": "v" for i in range(n)})
        return f"many-entries-{n}"
    if kind == "huge-values":
        size = rng.choice(HUGE_SIZES)
        n = max(1, min(rng.choice([1, 3, 6]), room // (size + 16)))
        for i in range(n):
            entries[f"big{i}"] = huge_string(rng, size)[0]
        return f"huge-values-{n}x{size}B"
    if kind == "huge-key":
        key, label = huge_string(rng, min(rng.choice(HUGE_SIZES), max(1, room // 2)))
        entries[key] = "v"
        return f"key-{label}"
    for key in ["", "\x00", "a\x00b", "a.b", "$gt", "\x1b[0m", "ü", " "]:
        entries[key] = rng.choice(["", "\x00", "v"])
    return "bad-keys"


def _mutate_repeated(
    holder: pbmessage.Message, f: FieldDescriptor, rng: random.Random, pool: Sequence[str], room: int
) -> str:
    items = getattr(holder, f.name)
    kind = rng.choice(["empty", "many", "one-more"])
    if kind == "empty":
        del items[:]
        return "empty"
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        sample = items[0] if len(items) else None
        if kind == "one-more" or sample is None:
            items.add()
            return "one-more-default"
        n = min(rng.choice([100, 1_000, 10_000]), room // (sample.ByteSize() + 4))
        copies = [type(sample)() for _ in range(n)]
        for c in copies:
            c.CopyFrom(sample)
        items.extend(copies)
        return f"many-{n}-copies"
    value, label = scalar_value(f, rng, pool)
    if kind == "one-more":
        items.append(value)
        return f"one-more-{label}"
    probe = type(holder)()
    getattr(probe, f.name).append(value)
    n = max(1, min(rng.choice([1_000, 100_000]), room // (probe.ByteSize() + 1)))
    items.extend([value] * n)
    return f"many-{n}x-{label}"


def mutate(root: pbmessage.Message, path: FieldPath, rng: random.Random, pool: Sequence[str]) -> str:
    """Mutate the field at `path` in `root` (in place) by its type; returns what was done."""
    holder = _holder(root, path, rng)
    f = path.leaf
    room = _room(root)
    if _is_map(f):
        label = _mutate_map(holder, f, rng, room)
    elif f.is_repeated:
        label = _mutate_repeated(holder, f, rng, pool, room)
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        if f.message_type.full_name == TIMESTAMP:
            seconds, nanos, label = timestamp_value(rng)
            stamp = getattr(holder, f.name)
            stamp.seconds, stamp.nanos = seconds, nanos
        elif rng.random() < 0.5:
            holder.ClearField(f.name)
            label = "clear"
        else:
            getattr(holder, f.name).Clear()
            getattr(holder, f.name).SetInParent()
            label = "set-empty"
    elif f.has_presence and rng.random() < 0.15:
        holder.ClearField(f.name)
        label = "clear"
    else:
        value, label = scalar_value(f, rng, pool)
        setattr(holder, f.name, value)
    return f"{path}: {label}"


# -- what the server stored -------------------------------------------------------------------------


def oversized(msg: pbmessage.Message, limit: int, prefix: str = "") -> Iterator[tuple[str, int]]:
    """(field path, bytes) of every field larger than `limit`: a string or bytes value, a whole
    map, or a whole repeated string field. Indexes are left out of the path so one unbounded
    field is one finding however many events carry it."""
    for f, value in msg.ListFields():
        name = f"{prefix}.{f.name}" if prefix else f.name
        if _is_map(f):
            size = sum(
                _size(k) + (_size(v) if isinstance(v, str | bytes) else v.ByteSize())
                for k, v in value.items()
            )
            if size > limit:
                yield f"{name} ({len(value)} entries)", size
        elif f.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value if f.is_repeated else [value]:
                yield from oversized(item, limit, name)
        elif f.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            size = sum(_size(v) for v in value) if f.is_repeated else _size(value)
            if size > limit:
                yield name, size


def _size(value: str | bytes) -> int:
    return len(value.encode()) if isinstance(value, str) else len(value)
