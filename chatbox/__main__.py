import sys

from chatbox.cli.main import main

sys.exit(main())
