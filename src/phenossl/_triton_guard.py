"""Load triton so that it cannot crash a process that already holds a Mesa OpenGL context.

With Mesa OpenGL (Xvfb, many Intel/AMD Linux desktops) importing ``triton`` after napari has created its
GL context kills the process with a segmentation fault: triton's extension resolves symbols against
Mesa's LLVM. torchvision, cellpose and torch's compiler all import triton, and napari users open the
viewer *before* the plugin. Loading triton once with ``RTLD_DEEPBIND`` makes it bind to its own symbols,
which avoids the crash whatever the order (see tests/napari/test_import_order.py).
"""

from __future__ import annotations

import importlib.util
import os
import sys


def preload_triton() -> bool:
    """Import triton with RTLD_DEEPBIND if it is installed and not yet loaded. Returns True if loaded."""
    if "triton" in sys.modules:
        return True
    if not hasattr(os, "RTLD_DEEPBIND") or importlib.util.find_spec("triton") is None:
        return False
    old_flags = sys.getdlopenflags()
    sys.setdlopenflags(old_flags | os.RTLD_DEEPBIND)
    try:
        import triton  # noqa: F401
    except Exception:  # a broken triton must not stop phenossl: torch falls back to eager mode
        return False
    finally:
        sys.setdlopenflags(old_flags)
    return True
