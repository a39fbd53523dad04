"""`ninport convert` as a library: load a Caffe net, write its files, check the ONNX file in onnxruntime.

Everything that can be checked cheaply is checked before the long work starts: the formats asked
for, the packages they need, the prototxt and weights paths. Progress is reported through a
callback (the CLI logs each stage), since a large net takes a minute to export.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from ninport import memory
from ninport.api import InputShape, PathLike, check_net_files, check_path, default_weights_path
from ninport.build.description import NetDescription
from ninport.build.shapes import size_fixing_layers, size_fixing_text
from ninport.check.selfcheck import DEFAULT_TOLERANCE, SelfCheck
from ninport.errors import ExportError, NinportError, NinportWarning, safe_message
from ninport.export.formats import FORMAT_PACKAGES, check_formats
from ninport.fileio import check_output_dir_usable

if TYPE_CHECKING:  # torch loads only once the cheap checks passed
    from ninport.export.onnx import InputSize

@dataclass(frozen=True)
class ConversionResult:
    prototxt: Path
    weights: Path | None            # None: seeded random weights (a NinportWarning said so)
    description: NetDescription
    written: dict[str, Path]        # format -> file
    checks: dict[str, SelfCheck]    # format -> its check against the torch module; empty with check=False
    input_size: InputSize | None = None  # what the ONNX / .pt2 files do with height and width; None without them

    @property
    def check(self) -> SelfCheck | None:
        """The ONNX file's check (None when not asked for or no ONNX file was written)."""
        return self.checks.get("onnx")

    @property
    def passed(self) -> bool:
        """No written file failed its check (an inconclusive or skipped check is not a failure)."""
        return not any(c.status == "failed" for c in self.checks.values())


def check_packages(formats: Iterable[str]) -> None:
    """ExportError now, not after a long export, when a format needs a package that is not installed."""
    for fmt in formats:
        package = FORMAT_PACKAGES.get(fmt)
        if package and importlib.util.find_spec(package) is None:
            raise ExportError(f"--format {fmt} needs the `{package}` package (pip install {package}, "
                              "or pip install 'ninport[all]')")


def convert_files(prototxt: PathLike, weights: PathLike | None = None, out_dir: PathLike = ".", *,
                  input_shape: InputShape = None, formats: Iterable[str] = ("onnx",), check: bool = True,
                  tolerance: float = DEFAULT_TOLERANCE, dynamic_size: bool | None = None,
                  progress: Callable[[str], None] | None = None, dialect: str | None = None) -> ConversionResult:
    """Write `<out_dir>/<prototxt stem>.<format>` for each format (all or nothing), then, with `check`,
    check every written file against the torch module (`ninport.check.selfcheck.check_file`: the ONNX file
    in onnxruntime, the .pt2 program loaded and run, the .py file run without ninport, the
    .safetensors tensors bit for bit).

    `weights=None` uses `<stem>.caffemodel` beside the prototxt when it exists, else seeded random
    weights (with a NinportWarning). A failed check is reported in the result, not raised.
    `dynamic_size` is for the ONNX and .pt2 exports: None, symbolic height and width when the net
    runs at other sizes (else fixed, `result.input_size.reason` says why); True, symbolic or an
    ExportError naming the layer that fixes the size (`export_onnx(dynamic_size=True)` forces them);
    False, fixed at the input shape. `dialect`: see `ninport.load`.

    Arguments, formats, the files and the output folder are checked before anything slow (torch is
    not even imported): a typo fails in milliseconds.
    """
    prototxt = check_path(prototxt, "prototxt")
    weights = check_path(weights, "weights", optional=True)
    out_dir = check_path(out_dir, "out_dir")
    if dynamic_size is not None and not isinstance(dynamic_size, bool):
        raise NinportError(f"dynamic_size must be True, False or None, got {type(dynamic_size).__name__}")
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = check_formats(formats)
    check_packages(formats)
    if weights is None:
        weights = default_weights_path(prototxt)
    # everything checkable in milliseconds, before torch and the exporter load (seconds)
    check_output_dir_usable(out_dir)
    spec = check_net_files(prototxt, weights, input_shape, dialect)
    exported = "onnx" in formats or "pt2" in formats
    fixing = size_fixing_layers(spec) if exported and dynamic_size else []
    if fixing:  # `ninport convert --dynamic` on a net that runs at its input size only
        raise ExportError(f"{prototxt}: height and width cannot be dynamic: the net runs only at its input size "
                          f"({size_fixing_text(fixing)}); in Python, export_onnx(..., dynamic_size=True) "
                          "forces them")

    import ninport
    from ninport.check.selfcheck import check_file, seeded_reference
    from ninport.export.artifacts import write_outputs
    from ninport.export.onnx import InputSize, SymbolicSizeError, input_size_for

    say = progress or (lambda message: None)
    say(f"reading {prototxt}" + (f" and {weights}" if weights else " (no caffemodel: random weights)"))
    module = ninport.load(prototxt, weights, input_shape=input_shape, dialect=dialect)
    description = ninport.describe(module)
    memory.require(memory.convert_bytes(module, description, export=exported, check=check,
                                        check_batch=check_batch(description, exported)),
                   f"{prototxt}: converting {memory.at_input(description)}" + (" and checking" if check else ""),
                   "give a smaller --input-shape" + (" or --no-check" if check else ""))
    size = input_size_for(description, dynamic_size) if exported else None
    checks: dict[str, SelfCheck] = {}
    # The module runs once, on the seeded input every check uses, before the exporters add their own memory.
    reference = seeded_reference(module, description, batch=check_batch(description, exported)) if check else None

    def check_staged(staged: dict[str, Path]) -> None:
        # The STAGED files are run (never the final paths, which another process may be writing); a
        # mismatch is reported in the result, the files are still written (exit code 3 in the CLI).
        # The .safetensors file, compared with the module's own tensors, goes first; then the module's weights
        # are freed (this module is ours and not used again) so that onnxruntime and torch.export.load can
        # load the files' copies of them.
        found: dict[str, SelfCheck] = {}
        for fmt in sorted(staged, key=lambda f: f != "safetensors"):
            if fmt != "safetensors":
                free_weights(module)
            say(f"checking {prototxt.stem}.{fmt} {CHECK_STAGES[fmt]}")
            found[fmt] = check_file(fmt, module, staged[fmt], tolerance=tolerance, description=description,
                                    reference=reference)
        checks.update((fmt, found[fmt]) for fmt in staged)

    def write(size: InputSize | None) -> dict[str, Path]:
        checks.clear()
        return write_outputs(module, out_dir, prototxt.stem, formats, progress=_export_stages(say),
                             check=check_staged if check else None,
                             dynamic_size=size.dynamic if size is not None else None)

    try:
        written = write(size)
    except SymbolicSizeError as exc:
        if dynamic_size is not None:
            raise
        # the shape rules let the net run at other sizes, but torch could not keep them symbolic: say so
        reason = str(exc).split("height and width cannot be dynamic: ", 1)[-1]
        size = InputSize(False, reason)
        written = write(size)
        warnings.warn(safe_message(f"{prototxt}: height and width fixed at the input shape in the exported "
                                   f"files: {reason}"), NinportWarning, stacklevel=2)
    checks = {fmt: dataclasses.replace(c, path=str(written[fmt])) for fmt, c in checks.items()}
    return ConversionResult(prototxt, weights, description, written, checks, size)


def check_batch(description: NetDescription, exported: bool) -> int | None:
    """The batch `convert` checks its files at: 1 when the files were exported with a dynamic batch (`convert`
    always exports so) and every input has the same batch, else the net's own (None). The exporters trace at a
    batch of at least 2, so a file that kept the example's batch still fails at 1; and a deploy prototxt's batch
    is often an accident of history (VGG16's 10 crops) that would only multiply the check's memory and time
    (VGG16: a 128 MiB blob per convolution of its first block at 10, 13 MiB at 1)."""
    batches = {shape[0] for shape in description.inputs.values() if len(shape)}
    if not exported or len(batches) != 1 or next(iter(batches)) <= 1:
        return None
    return 1


# Weights smaller than this are kept through the checks: freeing them takes a cycle collection, which after an
# export costs about 0.4 s (NIN's 29 MiB are not worth it; VGG16's 528 MiB are).
FREE_WEIGHTS_BYTES = 64 * 2 ** 20


def free_weights(module) -> bool:
    """Release the memory of a module's parameters and buffers (they become meta tensors: shapes, no data), if
    they hold at least FREE_WEIGHTS_BYTES; True if it did. For a module that nothing will run again
    (`convert_files`' own, once its outputs on the check input are known), so that checking the files does not
    hold the weights twice. The exporters leave reference cycles behind that still reach the old tensors: the
    cycle collector runs here, not at some later allocation."""
    import ctypes
    import gc

    tensors = [t for t in (*module.parameters(), *module.buffers()) if not t.is_meta]
    if sum(t.numel() * t.element_size() for t in tensors) < FREE_WEIGHTS_BYTES:
        return False
    del tensors
    module.to("meta")
    gc.collect()
    try:  # glibc keeps freed heap memory for reuse; give it back to the system (the exporters' leftovers)
        ctypes.CDLL(None).malloc_trim(0)
    except (AttributeError, OSError):  # not glibc
        pass
    return True


# How each format is checked, for progress lines.
CHECK_STAGES = {"onnx": "in onnxruntime", "pt2": "with torch.export.load", "py": "in a Python without ninport",
                "safetensors": "against the module's tensors"}


def _export_stages(say: Callable[[str], None]) -> Callable[[str], None]:
    """write_outputs says `writing <file>`: name the stage (ONNX export is the long one) for the user."""
    names = {".onnx": "exporting ONNX to", ".pt2": "exporting torch.export program to",
             ".safetensors": "writing weights to"}

    def stage(message: str) -> None:
        if message.startswith("writing "):
            target = message[len("writing "):]
            verb = names.get(Path(target).suffix, "writing")
            message = f"{verb} {target}"
        say(message)
    return stage

