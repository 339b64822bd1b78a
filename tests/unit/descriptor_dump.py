"""Print a normalized JSON view of a set of generated proto modules.

Run as a subprocess (`python descriptor_dump.py PACKAGE`): the SDK's and our
generated modules register the same unqualified names, so they cannot share
one process's descriptor pool.
"""

from __future__ import annotations

import importlib
import json
import sys

from google.protobuf import descriptor_pb2

FILES = [
    "attestation_pb2",
    "orchestration_pb2",
    "history_events_pb2",
    "orchestrator_actions_pb2",
    "orchestrator_service_pb2",
]


def _message(m: descriptor_pb2.DescriptorProto, prefix: str, out: dict[str, object]) -> None:
    name = prefix + m.name
    fields = {}
    for f in m.field:
        oneof = None
        if f.HasField("oneof_index") and not f.proto3_optional:
            oneof = m.oneof_decl[f.oneof_index].name
        fields[str(f.number)] = [f.name, f.type, f.label, f.type_name, f.proto3_optional, oneof]
    out[name] = fields
    for nested in m.nested_type:
        _message(nested, name + ".", out)


def dump(package: str) -> dict[str, object]:
    messages: dict[str, object] = {}
    enums: dict[str, object] = {}
    services: dict[str, object] = {}
    for mod_name in FILES:
        mod = importlib.import_module(f"{package}.{mod_name}")
        fd = descriptor_pb2.FileDescriptorProto()
        mod.DESCRIPTOR.CopyToProto(fd)
        assert fd.package == "", f"{mod_name} declares package {fd.package!r}"
        for m in fd.message_type:
            _message(m, "", messages)
        for e in fd.enum_type:
            enums[e.name] = {v.name: v.number for v in e.value}
        for s in fd.service:
            services[s.name] = {
                mt.name: [mt.input_type, mt.output_type, mt.client_streaming, mt.server_streaming]
                for mt in s.method
            }
    return {"messages": messages, "enums": enums, "services": services}


if __name__ == "__main__":
    json.dump(dump(sys.argv[1]), sys.stdout, sort_keys=True)
