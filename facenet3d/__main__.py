import sys

from facenet3d.cli import main

sys.exit(main())
