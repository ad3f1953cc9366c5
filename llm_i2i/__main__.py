import sys

from llm_i2i.cli import main

sys.exit(main())
