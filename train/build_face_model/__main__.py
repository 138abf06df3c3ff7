import sys

from facenet3d.train.build_face_model.build import main

sys.exit(main())
