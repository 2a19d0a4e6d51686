"""The benchmark driver: ``python benchmarks/run.py [--quick] [--out FILE.json]`` is ``cnnlab bench``.

The measuring lives in the library (:mod:`cnnlab.bench`), so that the CLI and this script are one program; see
docs/benchmarks.md for the recorded tables and the exact commands behind them.
"""

import sys

from cnnlab.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
