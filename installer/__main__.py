"""`python3 -m installer ...` from the repository root.

The version check comes before any import of the real code, which uses 3.10 syntax,
so an old Python gets a sentence instead of a SyntaxError.
"""

import sys

if sys.version_info < (3, 10):  # noqa: UP036 (this check is the point)
    found = ".".join(str(part) for part in sys.version_info[:2])
    sys.stderr.write(
        "Krita Diffusers needs Python 3.10 or newer; this is Python " + found + ".\n"
        "  What to do: install Python 3.10+ and run `python3.11 -m installer` "
        "(Windows: `py -3.11 -m installer`).\n"
    )
    sys.exit(2)

if not __package__:  # run as `python3 installer` (a folder path): make the package importable
    import os

    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from installer.cli import main

sys.exit(main())
