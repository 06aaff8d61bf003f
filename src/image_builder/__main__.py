import sys

from image_builder.cli import main

sys.exit(main())
