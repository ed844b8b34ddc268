"""emtm: fast temporal sentence grounding in videos with multi-teacher knowledge distillation.

`from emtm import Grounder` gives the Python API (emtm.api); it is imported on first use, so the
command line starts without loading torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from emtm.version import __version__

__all__ = ["Grounder", "Moment", "__version__"]

if TYPE_CHECKING:
    from emtm.api import Grounder, Moment


def __getattr__(name: str) -> Any:
    if name in ("Grounder", "Moment"):
        from emtm import api

        return getattr(api, name)
    raise AttributeError(f"module 'emtm' has no attribute {name!r}")
