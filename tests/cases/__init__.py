"""The shared battery's registry: every public transform, by name.

Each module ``tests/cases/<area>.py`` defines ``CASES: dict[str, Case]``; a new transform joins
the battery by adding one entry there. This package merges them.
"""

from __future__ import annotations

import importlib
import pkgutil

from tests.cases.base import Case

ALL: dict[str, Case] = {}
for _info in pkgutil.iter_modules(__path__):
    if _info.name == "base":
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name, _case in _module.CASES.items():
        if _name in ALL:
            raise RuntimeError(f"duplicate battery case {_name!r}")
        ALL[_name] = _case
