import sys

from tfmood.cli import main

sys.exit(main())
