"""``python -m facenet3d.train``: see :mod:`facenet3d.train.cli`."""

import sys

from facenet3d.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
