"""Checks an installed survae_flowify as a user gets it from the wheel (``make package`` runs it).

Run with the fresh environment's Python, from outside the source tree: the package must be the
installed copy (not editable, not the checkout), with its licence and typing marker, and the
version its metadata declares must be the one the code defines.
"""

import importlib.metadata
import os
import shutil
import sys
from pathlib import Path

import survae_flowify

installed = Path(survae_flowify.__file__).resolve().parent
distribution = importlib.metadata.distribution("survae_flowify")
shipped = {Path(f).name for f in distribution.files or []}
problems = [
    *(["not the installed copy: " + str(installed)] if "site-packages" not in installed.parts else []),
    *(["py.typed is missing"] if not (installed / "py.typed").is_file() else []),
    *(["LICENSE is missing from the wheel"] if "LICENSE" not in shipped else []),
    *([f"version {distribution.version} != __version__ {survae_flowify.__version__}"]
      if distribution.version != survae_flowify.__version__ else []),
]
# The spline's C loops build from the installed source where a C compiler is (as on CI).
if shutil.which(os.environ.get("CC", "cc")):
    from survae_flowify.transforms import _rq_native

    if not (installed / "transforms" / "_rq_native.c").is_file():
        problems.append("transforms/_rq_native.c is missing")
    elif not _rq_native.available():
        problems.append("the spline's C kernel did not build from the installed source")
if problems:
    sys.exit("survae_flowify as installed from the wheel: " + "; ".join(problems))
print(f"survae_flowify {distribution.version} from the wheel at {installed}: py.typed, LICENSE and the "
      "spline kernel's C source present")
