"""The one typed description of a converted net, carried by the module ninport builds.

It says what the torch module is in Caffe's terms: inputs and their reference shapes, outputs in
Caffe's order, which graph node holds each blob and which layer wrote it, which submodule is which
Caffe layer, where the net came from and what preprocessing its data layer declared. It is built once,
by the graph builder, and every other part (export, verify, predict, code generation) reads it through
`describe(module)`. Caffe names are data here: submodules and graph nodes get generated identifiers.

Nothing here imports torch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

from ninport.caffe.spec import Preprocess
from ninport.errors import NinportError

META_KEY = "ninport"

Shape = tuple[int, ...]
Phase = Literal["TEST", "TRAIN"]  # the Caffe phase a net was built for


@dataclass(frozen=True)
class BlobRecord:
    """One Caffe blob: the graph node holding its final value and the layer that wrote it."""

    name: str
    node: str
    layer: str | None  # None for a net input
    shape: Shape       # at the reference input size


@dataclass(frozen=True)
class LayerRecord:
    """One Caffe layer and the submodule (attribute of the module) that computes it."""

    name: str
    type: str
    module: str
    bottoms: tuple[str, ...]
    tops: tuple[str, ...]


@dataclass(frozen=True)
class NetDescription:
    name: str
    source: str
    source_format: str
    inputs: dict[str, Shape]          # input blob -> reference shape, in the net's input order
    outputs: tuple[str, ...]          # Caffe's output order (unconsumed blobs sorted by name)
    blobs: dict[str, BlobRecord]      # every blob, in the order Caffe computes them
    layers: tuple[LayerRecord, ...]   # in Caffe's order
    weights: str | None = None        # the caffemodel, or None for seeded random weights
    preprocess: Preprocess | None = None
    phase: Phase = "TEST"
    dialect: str | None = None        # the dialect the net was read with (`ninport.load(..., dialect=)`)
    # Caffe's net.blobs in its order, each with the blob whose value it holds (itself, or for one of
    # Caffe's automatic `<blob>_<layer>_<i>_split_<j>` copies the blob it copies)
    caffe_blobs: tuple[tuple[str, str], ...] = ()

    @property
    def split_copies(self) -> dict[str, str]:
        """Caffe's automatic split blobs: name -> the blob it copies."""
        return {name: source for name, source in self.caffe_blobs if name != source}
    # (layer, reason) for the layers that fix the input size (`ninport.build.shapes.size_fixing_layers`);
    # empty when the net runs at other sizes: what `inspect` says and what exports follow
    size_fixed_by: tuple[tuple[str, str], ...] = ()

    @property
    def title(self) -> str:
        """The net's `name:`, or the prototxt's file stem when it has none: for class names and headers."""
        return self.name or (PurePath(self.source).stem if self.source else "")

    def layer(self, name: str) -> LayerRecord:
        for record in self.layers:
            if record.name == name:
                return record
        raise NinportError(f"the net has no layer named {name!r}")

    def module_of(self, layer_name: str) -> str:
        """The submodule attribute that computes the Caffe layer `layer_name`."""
        return self.layer(layer_name).module

    @property
    def module_layers(self) -> dict[str, str]:
        """Submodule attribute -> Caffe layer name."""
        return {record.module: record.name for record in self.layers}


def describe(module: Any) -> NetDescription:
    """The NetDescription of a module built by `ninport.load`; NinportError for any other module."""
    meta = getattr(module, "meta", None)
    description = meta.get(META_KEY) if isinstance(meta, dict) else None
    if not isinstance(description, NetDescription):
        raise NinportError("this module was not built by ninport.load() (it carries no net description); "
                           "after an fx transform, pass description=ninport.describe(original)")
    return description


def attach(module: Any, description: NetDescription) -> None:
    """Attach `description` to `module` (GraphModule.meta survives deepcopy)."""
    module.meta[META_KEY] = description
