"""The blobs of Caffe's net as pycaffe's `net.blobs` lists them, automatic split copies included.

Caffe inserts a Split layer after every top that more than one bottom reads (Net::Init calls InsertSplits,
BVLC src/caffe/util/insert_splits.cpp): its tops `<blob>_<layer>_<i>_split_<j>` (SplitBlobName: the blob,
the layer that last wrote it, the top's index in that layer, the reader's number) replace the blob in each
reader's bottoms, and share its data (SplitLayer::Reshape: ShareData). So a full blob dump of a Caffe net
holds these copies too. `caffe_blobs` lists every blob in the order Net::Init creates them (AppendTop: new
tops layer by layer, a Split layer's tops right after the layer it follows; in-place tops create none),
each with the blob whose value it holds: itself, or the blob a split copy copies.

It runs over every layer of Caffe's net for the phase, those ninport leaves out included (the Input layer
made from `input:` fields, named "input" as Caffe's upgrade names it; losses and Accuracy in the TEST
phase), since they read blobs too; a top with an explicit nonzero `loss_weight` counts as one more reader,
as in InsertSplits. Nothing here imports torch.
"""
from __future__ import annotations

from collections.abc import Sequence

Top = tuple[int, int]  # (layer index, top index)


def split_blob_name(layer_name: str, blob_name: str, blob_index: int, split_index: int) -> str:
    """SplitBlobName (insert_splits.cpp)."""
    return f"{blob_name}_{layer_name}_{blob_index}_split_{split_index}"


def caffe_blobs(layers: Sequence) -> tuple[tuple[str, str], ...]:
    """((blob, the blob whose value it holds), ...) in Caffe's net.blobs order, for the LayerParameters
    of Caffe's net (after its upgrade and phase filter) in order."""
    last_top: dict[str, Top] = {}
    readers: dict[Top, int] = {}  # top_idx_to_bottom_count
    for i, layer in enumerate(layers):
        for blob in layer.bottom:
            if blob in last_top:  # an unknown bottom is refused elsewhere (Caffe: "Unknown bottom blob")
                top = last_top[blob]
                readers[top] = readers.get(top, 0) + 1
        for j, blob in enumerate(layer.top):
            last_top[blob] = (i, j)
        for j in range(min(len(layer.loss_weight), len(layer.top))):
            if layer.loss_weight[j]:
                top = last_top[layer.top[j]]
                readers[top] = readers.get(top, 0) + 1
    order: list[tuple[str, str]] = []
    seen: set[str] = set()
    for i, layer in enumerate(layers):
        for blob in layer.top:  # AppendTop: an in-place top (or a repeated one, which Caffe refuses) adds none
            if blob not in seen:
                seen.add(blob)
                order.append((blob, blob))
        for j, blob in enumerate(layer.top):
            count = readers.get((i, j), 0)
            if count < 2:  # a blob read once needs no Split layer
                continue
            for k in range(count):
                name = split_blob_name(layer.name, blob, j, k)
                if name not in seen:
                    seen.add(name)
                    order.append((name, blob))
    return tuple(order)
