"""segrt train --layout pets --data DIR --out runs/NAME [options]   (or: python -m segrt.training ...)

Multi-GPU / multi-node: torchrun --nproc_per_node=N -m segrt.training ... (CPU: gloo backend).
The options are in segrt/training/cli.py.
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
