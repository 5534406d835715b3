"""Rewrites protoc's top-level `liveresource.v1` imports to `generated.liveresource.v1`."""

from __future__ import annotations

import pathlib
import re
import sys

_IMPORT = re.compile(r"^(from|import) liveresource\.v1", re.MULTILINE)


def main(out_dir: str) -> None:
    root = pathlib.Path(out_dir)
    package = root / "liveresource" / "v1"
    for path in sorted(package.glob("*.py*")):
        text = path.read_text()
        fixed = _IMPORT.sub(r"\1 generated.liveresource.v1", text)
        if fixed != text:
            path.write_text(fixed)
    for folder in (root, root / "liveresource", package):
        init = folder / "__init__.py"
        if not init.exists():
            init.write_text('"""Generated code: do not edit; run `make gen`."""\n')
        (folder / "py.typed").touch()


if __name__ == "__main__":
    main(sys.argv[1])
