"""Benchmark: one NeRF training step (render + backward + Adam) at several widths and precisions, against
a matrix-product peak measured in the same run. The same as `study bench`; every option passes through:

    python bench/train_step.py [--data PATH --downscale 4] [--rays 1024] [--samples 64] [--json]
    python bench/train_step.py --data ../shared/data/nerf_synthetic/lego --downscale 4 \\
        --time-to-psnr 21.5 --overhead

Not a test: run it by hand and quote the table.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from study.cli import main

if __name__ == "__main__":
    sys.argv = ["study", "bench", *sys.argv[1:]]
    main()
