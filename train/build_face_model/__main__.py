import sys

from train.build_face_model.build import main

sys.exit(main())
