"""`python -m fruitnet.report`: the command line lives in `fruitnet.report.cli`, so importing the
package never imports this file (runpy warns when `-m` runs a module already imported)."""

import sys

from fruitnet.report.cli import main

if __name__ == "__main__":
    sys.exit(main())
