"""Build the API reference from the docstrings: ``python tools/build_docs.py [OUT]`` (default
``docs/api``), HTML by pdoc (the ``docs`` extra), numpydoc-style docstrings.

Every warning is an error (a name in ``fa_gpu.__all__`` that does not resolve, a docstring pdoc
cannot parse, ...), so CI fails on a broken reference (``tests/test_docs.py``).
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

#: the public names (``fa_gpu.__all__``, its modules included), the options of ``Engine.run``
#: and the plots; the compute kernels are internal (and fa_gpu.kernels.cuda needs the gpu extra)
MODULES = ["fa_gpu", "fa_gpu.runtime.loop", "fa_gpu.plot", "!fa_gpu.kernels"]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "docs" / "api")
    import pdoc
    import pdoc.render

    import fa_gpu

    for name in fa_gpu.__all__:  # lazily imported names (zarr): load them so pdoc finds them
        getattr(fa_gpu, name)
    pdoc.render.configure(docformat="numpy", search=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pdoc.pdoc(*MODULES, output_directory=out)
    print(f"wrote {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
