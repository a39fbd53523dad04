"""`ninport upgrade`: rewrite a V0/V1 prototxt (text) or caffemodel (binary) in the current format,
as Caffe's upgrade_net_proto_text and upgrade_net_proto_binary tools do."""
from __future__ import annotations

from pathlib import Path

from ninport.caffe import io
from ninport.caffe.upgrade import net_format, upgrade_net
from ninport.fileio import check_regular_file, write_bytes_atomic


def is_binary_caffemodel(path: Path) -> bool:
    if path.suffix in (".caffemodel", ".binaryproto"):
        return True
    if path.suffix in (".prototxt", ".pbtxt", ".txt"):
        return False
    with open(path, "rb") as fh:
        head = fh.read(4096)
    return b"\x00" in head


def upgrade_file(source: str | Path, output: str | Path | None = None) -> tuple[Path, str]:
    """Write the upgraded net; return (output path, the source's format: V0, V1 or current)."""
    from google.protobuf import text_format

    source = Path(source)
    check_regular_file(source, "Caffe net or weights")
    binary = is_binary_caffemodel(source)
    if binary:
        net = io.read_caffemodel_proto(source)
    else:
        parsed = io.parse_prototxt(io.read_prototxt_text(source), str(source))
        _refuse_unknown_fields(parsed, source)
        net = parsed.net
    fmt = net_format(net)
    upgraded = upgrade_net(net, str(source))
    target = Path(output) if output else source.with_name(f"{source.stem}_upgraded{source.suffix}")
    if target.resolve() == source.resolve():
        from ninport.errors import ExportError

        raise ExportError(f"{target}: refusing to overwrite the input; choose another -o")
    data = upgraded.SerializeToString() if binary else text_format.MessageToString(upgraded).encode("utf-8")
    write_bytes_atomic(target, data)
    return target, fmt


def _refuse_unknown_fields(parsed, source: Path) -> None:
    """The rewritten file is printed from caffe.proto's schema: fields it lacks would vanish, so
    refuse instead of writing a file that silently lost a fork's settings."""
    from ninport.errors import ParseError

    places = [place for per_layer in parsed.layer_unknown_places.values() for layer in per_layer
              for place in layer.items()] + list(parsed.unknown_places.items())
    if places:
        path, (line, col) = places[0]
        raise ParseError(f"{source}:{line}:{col}: field {path!r} is not in caffe.proto; upgrading would drop "
                         f"it ({len(places)} such field(s) in the file)")
