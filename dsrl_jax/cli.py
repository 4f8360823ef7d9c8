"""What every command-line entry point shares: config files by path or by name, and a
user's mistake reported as one line on stderr with exit status 2, never a traceback.

    if __name__ == "__main__":
        cli.run(main)                       # instead of absl's app.run(main)

`--config=configs/stage2.py` reads that file from a checkout; where no such file exists (an
installed package, another working directory), `--config=stage2`, `stage2.py` or
`configs/stage2.py` name a config of the project's `configs` package. The config files
import `configs.base`: `configs` is a package like `dsrl_jax` (installed beside it by
setup.py, or the checkout's directory when the checkout is on the path, as it is when
running from its root), so nothing is added to `sys.path` here.

`--config.smoke=True` selects the config file's "smoke" variant: it is `--config=FILE:smoke`
(ml_collections passes "smoke" to `get_config`; configs/demo.py has one).

Errors reported this way: flag parsing (a missing required flag, a bad value), an unknown
`--config.a.b` override key (with ml_collections' "did you mean" suggestion), a missing
config file (with the packaged names), a config file that cannot be imported, and
`UsageError`/`ConfigError` raised by `main`.
"""
from __future__ import annotations

import ast
import importlib.util
import os
import sys
from typing import Callable

from absl import app, flags

from dsrl_jax.validate import ConfigError

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in what the user asked for (a path, a name, a flag): one line, exit 2."""


def fail(message: object) -> None:
    """Print `error: <message>` (its lines joined into one) on stderr and exit 2."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()
    raise SystemExit(EXIT_USAGE)


def configs_dir() -> str:
    """The directory of the project's config files: the checkout's configs/ (beside this
    package), else the installed package `configs`."""
    local = os.path.join(_CHECKOUT, "configs")
    if os.path.isfile(os.path.join(local, "base.py")):
        return local
    spec = importlib.util.find_spec("configs")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("no configs: the package `configs` is not installed")
    return list(spec.submodule_search_locations)[0]


def config_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(configs_dir()) if f.endswith(".py") and not f.startswith("_"))


def resolve_config(value: str) -> str:
    """The config file a `--config` value means (an existing file, or a packaged config's
    name); `:args` after the file (ml_collections' config arguments) are kept."""
    spec, sep, args = value.partition(":")
    if os.path.isfile(spec):
        return value
    name = os.path.basename(spec)[:-3] if spec.endswith(".py") else os.path.basename(spec)
    if os.path.dirname(os.path.normpath(spec)) in ("", "configs"):  # a name, or the checkout-relative path
        try:
            candidate = os.path.join(configs_dir(), f"{name}.py")
        except UsageError:
            candidate = ""
        if candidate and os.path.isfile(candidate):
            return candidate + sep + args
    try:
        known = ", ".join(config_names())
    except (UsageError, OSError):
        known = "none installed"
    raise UsageError(f"config file not found: {spec} (packaged configs, by name: {known})")


SMOKE = "smoke"  # the config variant `--config.smoke=True` selects


def _smoke_requested(argv: list[str]) -> bool:
    for arg in argv:
        key, sep, value = arg.partition("=")
        if key == "--config.smoke" and (not sep or value.strip().lower() in ("true", "1")):
            return True
    return False


def prepare_argv(argv: list[str]) -> list[str]:
    """argv with `--config=` resolved to a file (raises UsageError when there is none), and
    the smoke variant appended when `--config.smoke=True` asks for it."""
    out, smoke = list(argv), _smoke_requested(argv)
    for i, arg in enumerate(out):
        if arg.startswith("--config="):
            path = resolve_config(arg.split("=", 1)[1])
            if smoke and ":" not in path:
                path += f":{SMOKE}"
            out[i] = f"--config={path}"
    return out


def _override_message(argv: list[str], error: Exception) -> str:
    """One line for an exception raised while applying `--config.x.y=v` overrides."""
    text = str(error.args[0]) if error.args else str(error)
    try:  # ml_collections puts the repr of its message in the exception
        text = ast.literal_eval(text) if text[:1] in "'\"" else text
    except (ValueError, SyntaxError):
        pass
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    key = lines[0].strip("'\"") if lines else ""
    flag = next((a.split("=", 1)[0] for a in argv if a.startswith("--config.")
                 and key in a.split("=", 1)[0].split(".")), None)
    if isinstance(error, (AttributeError, KeyError)) and flag:
        hint = next((line for line in lines[1:] if line.lower().startswith("did you mean")), "")
        return f"unknown config key {flag}" + (f" ({hint[0].lower() + hint[1:]})" if hint else "")
    return "bad config override: " + " ".join(lines)


def run(main: Callable, argv: list[str] | None = None) -> None:
    """absl's app.run(main) with the config resolution and one-line errors above."""
    try:
        argv = prepare_argv(sys.argv if argv is None else argv)
    except UsageError as e:
        fail(e)

    def parse(args: list[str]) -> list[str]:
        try:
            return flags.FLAGS(args)
        except flags.Error as e:
            fail(f"{e} (see --helpshort)")
        except ImportError as e:  # a config file's own imports, e.g. `from configs import base`
            fail(f"cannot load the config file: {e} (run from the checkout's root, put the checkout on "
                 "PYTHONPATH, or pip install the package)")
        except (AttributeError, KeyError, TypeError, ValueError) as e:
            fail(_override_message(args, e))

    def guarded(args):
        try:
            return main(args)
        except (UsageError, ConfigError) as e:
            fail(e)

    app.run(guarded, argv=argv, flags_parser=parse)
