"""ruta.protos: compiling .proto files to descriptor sets with a real protoc child process."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import descriptor_pb2

from ruta.faults import Fault
from ruta.protos import (
    MAX_PROTO_FILE_BYTES,
    ProtoCompileError,
    compile_descriptor_set,
    service_descriptor,
)

_GOOD = """syntax = "proto3";
package demo.v1;
import "google/protobuf/timestamp.proto";
import "common.proto";
message Req { string id = 1; google.protobuf.Timestamp at = 2; Shared shared = 3; }
service Demo { rpc Get(Req) returns (Req); }
"""
_COMMON = 'syntax = "proto3";\npackage demo.v1;\nmessage Shared { int32 n = 1; }\n'


def test_compiles_with_imports_and_well_known_types(tmp_path: Path) -> None:
    (tmp_path / "common.proto").write_text(_COMMON)
    proto = tmp_path / "demo.proto"
    proto.write_text(_GOOD)
    fds = descriptor_pb2.FileDescriptorSet.FromString(compile_descriptor_set(proto))
    names = {f.name for f in fds.file}
    assert {"demo.proto", "common.proto", "google/protobuf/timestamp.proto"} <= names


def test_import_paths_are_searched(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "common.proto").write_text(_COMMON)
    proto = tmp_path / "svc" / "demo.proto"
    proto.parent.mkdir()
    proto.write_text(_GOOD)
    raw = compile_descriptor_set(proto, (proto.parent, shared))
    assert "common.proto" in {f.name for f in descriptor_pb2.FileDescriptorSet.FromString(raw).file}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('syntax = "proto3";\nmessage {', "does not compile"),
        ('syntax = "proto3";\nimport "missing.proto";\n', "does not compile"),
        ("x" * (MAX_PROTO_FILE_BYTES + 1), "the limit is"),
    ],
)
def test_refusals_name_the_file_not_its_folder(tmp_path: Path, text: str, expected: str) -> None:
    proto = tmp_path / "bad.proto"
    proto.write_text(text)
    with pytest.raises(ProtoCompileError) as caught:
        compile_descriptor_set(proto)
    assert expected in caught.value.message
    assert "bad.proto" in caught.value.message
    assert str(tmp_path) not in caught.value.message
    assert caught.value.fault is Fault.CLIENT_INVALID_CONFIG


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProtoCompileError, match="cannot be read"):
        compile_descriptor_set(tmp_path / "absent.proto")


def test_service_descriptor_finds_the_service_or_says_what_is_defined(tmp_path: Path) -> None:
    (tmp_path / "common.proto").write_text(_COMMON)
    proto = tmp_path / "demo.proto"
    proto.write_text(_GOOD)
    compiled = compile_descriptor_set(proto)
    found = service_descriptor(compiled, "demo.v1.Demo")
    assert [m.name for m in found.methods] == ["Get"]
    with pytest.raises(ProtoCompileError, match=r"demo\.v1\.Nope is not defined \(defined: demo"):
        service_descriptor(compiled, "demo.v1.Nope")
    with pytest.raises(ProtoCompileError, match="not a valid FileDescriptorSet"):
        service_descriptor(b"\xff\xff", "demo.v1.Demo")
    only_demo = descriptor_pb2.FileDescriptorSet.FromString(compiled)
    del only_demo.file[:-1]  # demo.proto without the files it imports
    with pytest.raises(ProtoCompileError, match="--include_imports"):
        service_descriptor(only_demo.SerializeToString(), "demo.v1.Demo")
