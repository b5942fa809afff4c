import sys

from haformer.cli import main

sys.exit(main())
