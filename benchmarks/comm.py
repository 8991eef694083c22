"""``python benchmarks/comm.py``: runs :func:`fedmed.bench.comm_vit.main`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmed.bench.comm_vit import main  # noqa: E402

if __name__ == "__main__":
    main()
