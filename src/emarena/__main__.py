import sys

from emarena.cli.main import main

sys.exit(main())
