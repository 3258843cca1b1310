import sys

from chatbox.supervisor.main import main

sys.exit(main())
