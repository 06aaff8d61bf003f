import sys

from image_builder.cli import console

sys.exit(console())
