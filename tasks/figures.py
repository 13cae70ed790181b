"""The figures of stage reports: matplotlib set up once (no display needed), a figure in, PNG bytes out. A
stage returns the bytes as a `.png` file of its output; storage/stage.py shows them in its report (inline in
the Prefect UI as data URIs)."""
from __future__ import annotations

import io
from typing import Any


def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
    """`matplotlib.pyplot.subplots` on the file-only Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def png(fig: Any, dpi: int = 100) -> bytes:
    """The figure as PNG bytes, closed (a report makes many figures in one process)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def colormap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name]
