"""`ninport convert` as a library: load a Caffe net, write its files, check the ONNX file in onnxruntime.

Everything that can be checked cheaply is checked before the long work starts: the formats asked
for, the packages they need, the prototxt and weights paths. Progress is reported through a
callback (the CLI logs each stage), since a large net takes a minute to export.
"""
from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ninport import memory
from ninport.api import InputShape, PathLike, check_path, default_weights_path
from ninport.description import NetDescription
from ninport.errors import ExportError
from ninport.selfcheck import DEFAULT_TOLERANCE, SelfCheck

# Output formats -> the package each needs beyond ninport's core dependencies.
FORMAT_PACKAGES = {"safetensors": "safetensors"}


@dataclass(frozen=True)
class ConversionResult:
    prototxt: Path
    weights: Path | None            # None: seeded random weights (a NinportWarning said so)
    description: NetDescription
    written: dict[str, Path]        # format -> file
    check: SelfCheck | None         # None when not asked for or no ONNX file was written


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
    run the ONNX file in onnxruntime against the torch module (see `ninport.check_onnx`).

    `weights=None` uses `<stem>.caffemodel` beside the prototxt when it exists, else seeded random
    weights (with a NinportWarning). A failed self-check is reported in the result, not raised.
    `dynamic_size` is passed to the ONNX and .pt2 exports (None: symbolic height and width when the net
    runs at other sizes; False: fixed at the input shape). `dialect`: see `ninport.load`.
    """
    import ninport
    from ninport.artifacts import check_formats, write_outputs
    from ninport.selfcheck import check_onnx

    prototxt = check_path(prototxt, "prototxt")
    weights = check_path(weights, "weights", optional=True)
    out_dir = check_path(out_dir, "out_dir")
    if isinstance(formats, str):
        formats = [f.strip() for f in formats.split(",") if f.strip()]
    formats = check_formats(formats)
    check_packages(formats)
    say = progress or (lambda message: None)
    if weights is None:
        weights = default_weights_path(prototxt)
    say(f"reading {prototxt}" + (f" and {weights}" if weights else " (no caffemodel: random weights)"))
    module = ninport.load(prototxt, weights, input_shape=input_shape, dialect=dialect)
    description = ninport.describe(module)
    do_check = check and "onnx" in formats
    memory.require(memory.convert_bytes(module, description, export=bool({"onnx", "pt2"} & set(formats)),
                                        check=do_check),
                   f"{prototxt}: converting {memory.at_input(description)}" + (" and checking" if do_check else ""),
                   "give a smaller --input-shape" + (" or --no-check" if do_check else ""))
    checked: list = []

    def check_staged(staged: dict[str, Path]) -> None:
        # The STAGED file is run (never the final path, which another process may be writing); a
        # mismatch is reported in the result, the files are still written (exit code 3 in the CLI).
        say(f"checking {prototxt.stem}.onnx in onnxruntime")
        checked.append(check_onnx(module, staged["onnx"], tolerance=tolerance))

    written = write_outputs(module, out_dir, prototxt.stem, formats, progress=_export_stages(say),
                            check=check_staged if do_check else None, dynamic_size=dynamic_size)
    result = dataclasses.replace(checked[0], path=str(written["onnx"])) if checked else None
    return ConversionResult(prototxt, weights, description, written, result)


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

