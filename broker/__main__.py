import sys

from chatbox.broker.main import main

sys.exit(main())
