import sys

from coinlink.cli import main

sys.exit(main())
