"""Plugins: modules outside sftflow that declare stages or scorers, loaded once per process.

Named by the environment variable SFTFLOW_PLUGINS (comma-separated module names, e.g. `mypkg.stages`) or by
an installed package's entry points in the group `sftflow.plugins`. A plugin module declares `Stage` and
`Scorer` objects at module level, exactly as the modules of tasks/stages and tasks/scorers do.
"""
from __future__ import annotations

import functools
import importlib
import os
from importlib.metadata import entry_points
from types import ModuleType
from typing import Any

from tasks.errors import BadInputError

PLUGINS_ENV = "SFTFLOW_PLUGINS"
ENTRY_POINT_GROUP = "sftflow.plugins"


@functools.cache
def plugin_modules() -> tuple[ModuleType, ...]:
    names = [n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(",") if n.strip()]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:
            raise BadInputError(f"cannot import plugin module {name!r}: {exc}", field=PLUGINS_ENV) from exc
    modules += [ep.load() for ep in entry_points(group=ENTRY_POINT_GROUP)]
    return tuple(modules)


def package_modules(package: str) -> list[ModuleType]:
    """Every module of a package (not its subpackages), in name order."""
    import pkgutil

    pkg = importlib.import_module(package)
    return [importlib.import_module(f"{package}.{m.name}") for m in sorted(pkgutil.iter_modules(pkg.__path__),
                                                                            key=lambda m: m.name) if not m.ispkg]


def declared(kind: type, package: str, field: str, reserved: tuple[str, ...] = ()) -> dict[str, Any]:
    """name -> the `kind` objects declared at module level in `package`'s modules, then in the plugin modules;
    two of one name (or a reserved name) are an error that names `field`."""
    found: dict[str, Any] = {}
    for module in [*package_modules(package), *plugin_modules()]:
        for value in vars(module).values():
            if not isinstance(value, kind) or found.get(value.name) is value:
                continue
            if value.name in found or value.name in reserved:
                raise BadInputError(f"two {kind.__name__.lower()}s are named {value.name!r}", field=field)
            found[value.name] = value
    return found
