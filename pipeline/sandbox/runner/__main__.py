"""Start the runner: `python3 -I -B /opt/sandbox/runner/__main__.py --container`.

In the sandbox this directory is not on sys.path (`-I` leaves out the script's own
directory), so it puts the directory above it there and imports this directory as a
package by its name (`runner` at the mount point); `python -m pipeline.sandbox.runner`
works as well.
"""

import importlib
import os
import sys

if __package__:
    from .serve import main
else:
    _here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, os.path.dirname(_here))
    main = importlib.import_module(f"{os.path.basename(_here)}.serve").main

main()
