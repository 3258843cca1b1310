import sys

from chatbox.cli import main

sys.exit(main())
