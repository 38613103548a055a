"""Shared command-line conventions: a dataclass of defaults per script becomes its flags.

Every script accepts ``--epochs --batch-size --lr --seed --device --data-root --out-dir --quick
--resume --precision --threads`` plus its own fields. Building the config applies ``--threads``
(``torch.set_num_threads``), so no script has to. Quick mode is one switch: ``--quick`` or
``HW_QUICK=1`` in the environment (which ``make ... QUICK=1`` and notebooks set). A script's
``QUICK`` dict says what quick mode changes (few images, one or two epochs); flags given
explicitly on the command line still win.

The config is checked before a script writes anything (:func:`validate`): epochs, batch size
and learning rate must be positive, the device must exist. A bad value, like a flag argparse
rejects, is one line on stderr and exit code 2 (``run_main``), without the usage text.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import numbers
import os
import sys
import typing
from dataclasses import dataclass, fields

import torch

from .data import DataError
from .training import ConfigError, NonFiniteLoss, check_device


def env_quick() -> bool:
    return os.environ.get("HW_QUICK", "").strip().lower() in ("1", "true", "yes", "on")


@dataclass
class BaseConfig:
    """The shared flags. Subclass it with the script's own defaults."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 2e-4
    seed: int = 0
    device: str = "auto"
    data_root: typing.Optional[str] = None
    out_dir: typing.Optional[str] = None
    quick: bool = False
    resume: bool = False
    precision: str = dataclasses.field(default="auto", metadata={"choices": ["fp32", "bf16", "auto"]})
    threads: int = dataclasses.field(default=0, metadata={
        "help": "CPU threads for PyTorch (0: its default). On a CPU shared with other jobs, 1 is often "
                "far faster: two OpenMP threads spin-wait on each other"})

    QUICK: typing.ClassVar[dict] = {"epochs": 1}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _flag_type(tp):
    # typing.get_type_hints has already turned string annotations into types.
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is list:
        return args[0], "+"
    if args:  # Optional[X]
        return _flag_type(args[0])
    return tp, None


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors raise :class:`ConfigError` (one line, exit 2 through
    ``run_main``) instead of printing the usage text and exiting."""

    def error(self, message):
        raise ConfigError(message)


def build_parser(config_cls, description: str = "") -> argparse.ArgumentParser:
    parser = _Parser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        help_text = f.metadata.get("help", " ")
        if hints[f.name] is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default, help=help_text)
            continue
        tp, nargs = _flag_type(hints[f.name])
        parser.add_argument(flag, type=tp, nargs=nargs, default=default, help=help_text,
                            choices=f.metadata.get("choices"))
    return parser


def parse_config(config_cls, argv=None, description: str = ""):
    """Parse flags into ``config_cls``; quick mode applies ``config_cls.QUICK`` to flags not given."""
    parser = build_parser(config_cls, description)
    args = parser.parse_args(argv)
    tokens = {t.split("=")[0] for t in (argv if argv is not None else sys.argv[1:])}
    given = {a.dest for a in parser._actions if tokens & set(a.option_strings)}
    values = vars(args)
    values["quick"] = values["quick"] or env_quick()
    if values["quick"]:
        for k, v in config_cls.QUICK.items():
            if k not in given:
                values[k] = v
    return apply_threads(validate(config_cls(**values)))


# Fields that must be positive numbers wherever a config has them, and fields that may be 0
# (meaning "use --lr") but not negative.
POSITIVE = ("epochs", "batch_size", "lr")
NON_NEGATIVE_PREFIX = "lr_"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def validate(cfg):
    """Raise :class:`ConfigError` for a value no run can use: epochs, batch size (every entry of
    ``batch_sizes``) and learning rate must be positive, ``lr_*`` rates not negative, numbers finite,
    and the device must exist. Returns ``cfg``; nothing has been written when it raises."""
    values = dataclasses.asdict(cfg)

    def number(name, v, positive):
        ok = isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) and (v > 0 if positive else v >= 0)
        if not ok:
            kind = "a positive" if positive else "a non-negative"
            raise ConfigError(f"{_flag(name)} must be {kind} number (got {v})")

    for name in POSITIVE:
        if name in values:
            number(name, values[name], True)
    for name, v in values.items():
        if name.startswith(NON_NEGATIVE_PREFIX) and v is not None and not isinstance(v, (list, str)):
            number(name, v, False)
    for v in values.get("batch_sizes") or []:
        number("batch_sizes", v, True)
    check_device(values.get("device"))
    return cfg


def apply_threads(cfg):
    """Set PyTorch's CPU thread count from ``cfg.threads`` (0 leaves it alone); returns ``cfg``."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return cfg


def make_config(config_cls, **overrides):
    """A config for notebooks and tests: defaults, quick mode from ``HW_QUICK``, then overrides."""
    values = {}
    if overrides.get("quick", env_quick()):
        values.update(config_cls.QUICK)
        values["quick"] = True
    values.update(overrides)
    return apply_threads(validate(config_cls(**values)))


def run_main(main, argv=None) -> None:
    """Run ``main(argv)``; known failures become one line on stderr and an exit code
    (2: a bad flag, an unavailable device, a checkpoint that cannot be resumed, data missing or
    broken; 3: a loss or the weights became NaN, infinite or diverged), never a traceback."""
    try:
        main(argv)
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except SystemExit as exc:
        if not isinstance(exc.code, str):
            raise
        # A script's own check of its flags (``raise SystemExit("unknown ablation ...")``): the
        # same one line and exit code 2 as the shared flags.
        print(f"error: {exc.code.removeprefix('error: ')}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(3)
