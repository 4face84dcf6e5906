import sys

from pengi.cli import main

sys.exit(main())
