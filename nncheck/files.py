"""Setup files on disk, without importing them (and without torch): which files are setup files, where they define
`model`, which files are the user's own code. Shared by ``nncheck run FOLDER``, the pytest plugin's collection, the
annotations of the CI renderers and the error locations (``nncheck.setup.user_frame``, ``nncheck.worker``)."""

from __future__ import annotations

import os
import re
import sysconfig

# A file defines `model` at top level: a def, an assignment, or an import of that name.
DEFINES_MODEL = re.compile(r"^(def\s+model\b|model\s*[:=]|from\s+\S+\s+import\s+.*\bmodel\b)", re.MULTILINE)


def _read(path: str | os.PathLike[str]) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def defines_model(path: str | os.PathLike[str]) -> bool:
    """True when the file defines `model` at top level."""
    text = _read(path)
    return text is not None and bool(DEFINES_MODEL.search(text))


def model_line(path: str | os.PathLike[str]) -> int | None:
    """The line that defines `model` in a setup file (None when there is none or the file cannot be read): where
    warnings and annotations point."""
    text = _read(path)
    m = DEFINES_MODEL.search(text) if text is not None else None
    return text.count("\n", 0, m.start()) + 1 if m and text is not None else None


def setup_files_in(folder: str | os.PathLike[str]) -> list[str]:
    """The setup files of a folder (recursively): `.py` files defining `model`, not tests, conftest or private."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "_")))
        for name in sorted(files):
            if name.endswith(".py") and not name.startswith(("_", "test_")) and name != "conftest.py":
                path = os.path.join(root, name)
                if defines_model(path):
                    out.append(path)
    return out


_NNCHECK = os.path.dirname(os.path.abspath(__file__)) + os.sep
_STDLIB = tuple({os.path.abspath(sysconfig.get_paths()[k]) + os.sep for k in ("stdlib", "platstdlib")})


def is_user_file(filename: str) -> bool:
    """A file of the user's own code (where an error or a hang is reported): not nncheck's, not an installed
    library's, not the standard library's."""
    path = os.path.abspath(filename)
    return not (
        path.startswith(_NNCHECK)
        or "site-packages" in filename
        or "dist-packages" in filename
        or "importlib" in filename
        or filename.startswith("<")
        or path.startswith(_STDLIB)
    )
