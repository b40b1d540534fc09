"""Controllers by name: ``make_controller("fixed:8")``, ``"layerwise:0,4,8,16"``, ``"learned:runs/x"`` (policy.json).

Spec grammar: ``NAME`` or ``NAME:ARGS``. ``fixed:R`` takes a rank; ``layerwise:`` one rank per group
(``0,4,8,16``) or per kind (``attention=4,mlp=8``); ``learned:`` a policy path or the name of a policy
shipped in the package (``learned`` alone is ``learned:default``); the other controllers take
``key=value`` options separated by commas (``importance:target_rank=2,warmup_steps=50``). Keyword arguments
of :func:`make_controller` are passed on as well.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from rankrl.controllers.autofreeze import AutoFreezeController
from rankrl.controllers.base import RankController
from rankrl.controllers.complexity import ComplexityController
from rankrl.controllers.greedy import GreedyMemoryController
from rankrl.controllers.importance import ImportanceController
from rankrl.controllers.learned import LearnedController
from rankrl.controllers.static import FixedController, LayerwiseController
from rankrl.controllers.static_fit import StaticFitController
from rankrl.controllers.variance import VarianceController
from rankrl.policy import list_shipped_policies, shipped_policy

_CLASSES: dict[str, type[RankController]] = {
    "fixed": FixedController,
    "layerwise": LayerwiseController,
    "importance": ImportanceController,
    "complexity": ComplexityController,
    "variance": VarianceController,
    "greedy-memory": GreedyMemoryController,
    "static-fit": StaticFitController,
    "autofreeze": AutoFreezeController,
    "learned": LearnedController,
}
CONTROLLERS: list[str] = list(_CLASSES)


def make_controller(spec: str, **kwargs) -> RankController:
    """Build a controller from its spec string (see the module docstring).

    Raises:
        ValueError: unknown name (the known ones are listed), malformed arguments, or ``learned`` without a
            path.
    """
    name, _, args = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in _CLASSES:
        close = difflib.get_close_matches(name, CONTROLLERS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"Unknown controller '{name}'. Known controllers: {', '.join(CONTROLLERS)}.{hint}")
    if name == "fixed" and args:
        kwargs.setdefault("rank", _value(args, spec, integer=True))
    elif name == "layerwise" and args:
        if "=" in args:
            kwargs.setdefault("by_kind", {k: _value(v, spec, integer=True) for k, v in _options(args, spec).items()})
        else:
            kwargs.setdefault("ranks", [_value(r, spec, integer=True) for r in args.split(",")])
    elif name == "learned":
        if not args and "path" not in kwargs:
            args = "default"  # the policy shipped inside the package (see rankrl.policy.shipped_policy)
        if args:
            if args in list_shipped_policies() and not Path(args).exists():
                args = str(shipped_policy(args))
            elif args == "default":
                shipped_policy(args)  # raises the clear error when the package ships none
            kwargs.setdefault("path", args)
    elif args:
        kwargs.update({k: _value(v, spec) for k, v in _options(args, spec).items()})
    try:
        return _CLASSES[name](**kwargs)
    except TypeError as err:  # an option the controller does not take
        raise ValueError(f"Bad options for controller '{name}' in {spec!r}: {err}.") from err


def _options(args: str, spec: str) -> dict[str, str]:
    options = {}
    for item in args.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"Controller spec {spec!r}: expected key=value options, got {item!r}.")
        options[key.strip().replace("-", "_")] = value.strip()
    return options


def _value(text: str, spec: str, integer: bool = False) -> int | float | None:
    text = text.strip()
    if text.lower() == "none" and not integer:
        return None
    try:
        return int(text)
    except ValueError:
        if integer:
            raise ValueError(f"Controller spec {spec!r}: {text!r} is not an integer rank.") from None
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"Controller spec {spec!r}: {text!r} is not a number.") from None
