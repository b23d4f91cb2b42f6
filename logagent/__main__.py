import sys

from logagent.cli.main import main

sys.exit(main())
