"""Layer modules that record their constructor arguments, so the generated .py can rebuild them.

A layer's torch module is plain PyTorch: its constructor takes literals (numbers, booleans, strings,
None, tuples and lists of them) and tensors. `@records_args` keeps the arguments of each construction
on the instance (`__init_args__`: the class and its arguments by name; a tensor as a `TensorArg`, its
shape and kind, since the weights file holds its values), and `ninport.export.codegen` writes the class's own
source into the generated file with a `Cls(**args)` line. The decorator itself is not written there.
"""
from __future__ import annotations

import functools
import inspect
from typing import Any, NamedTuple, TypeVar

import torch
from torch import nn

ModuleClass = TypeVar("ModuleClass", bound=type)


class TensorArg(NamedTuple):
    """A tensor constructor argument, as the generated file writes it: an empty tensor of this shape and
    dtype (a Parameter when `parameter`) that loading the weights fills."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    parameter: bool
    requires_grad: bool


def _recorded_value(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorArg(tuple(int(d) for d in value.shape), value.dtype, isinstance(value, nn.Parameter),
                         bool(value.requires_grad))
    return value


def records_args(cls: ModuleClass) -> ModuleClass:
    """Class decorator: every construction stores `(cls, {argument: value})` as `module.__init_args__`.

    When a subclass is decorated too, the most derived decorated class's record wins (its __init__ returns
    last). A subclass that is not decorated (e.g. one adding ninport's size checks) is written as this class.
    """
    if "__init__" in cls.__dict__:
        init = cls.__dict__["__init__"]
    else:  # no constructor of its own: the next class's, in the instance's MRO

        def init(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            super(cls, self).__init__(*args, **kwargs)
    signature = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        bound = signature.bind(self, *args, **kwargs)
        values = {name: value for name, value in list(bound.arguments.items())[1:]}
        recorded: dict[str, Any] = {}
        for name, value in values.items():
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                recorded.update((k, _recorded_value(v)) for k, v in value.items())
            elif kind is inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(f"{cls.__name__}: *{name} arguments cannot be recorded")
            else:
                recorded[name] = _recorded_value(value)
        object.__setattr__(self, "__init_args__", (cls, recorded))

    cls.__init__ = __init__
    cls.__records_args__ = True
    return cls


def recorded_args(module: nn.Module) -> tuple[type, dict[str, Any]] | None:
    """The class to write and its constructor arguments, or None for a module that records none."""
    return module.__dict__.get("__init_args__")
