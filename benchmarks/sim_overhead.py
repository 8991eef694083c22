"""``python benchmarks/sim_overhead.py``: :func:`fedmed.bench.sim_overhead.main`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedmed.bench.sim_overhead import main  # noqa: E402

if __name__ == "__main__":
    main()
