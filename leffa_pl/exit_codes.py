"""Exit codes of ``leffa-pl-prepare``, ``leffa-pl-tryon`` and ``leffa-pl-pose``, shown in their ``--help``."""

from __future__ import annotations

DONE = 0
SKIPPED = 1  # finished, but some inputs were unusable (each named on stderr / in the summary)
CANNOT_START = 2  # bad arguments or inputs, missing weights: refused before any output (argparse's code too)
CANNOT_WRITE = 3  # an output could not be written (disk full, read-only folder): stopped; finished files are kept

EPILOG = (f"exit codes: {DONE} done; {SKIPPED} done, but some inputs were skipped (each is named); {CANNOT_START} "
          f"could not start (bad arguments or inputs, missing weights: nothing written); {CANNOT_WRITE} could not "
          "write an output (disk full, read-only folder: stopped; finished files are kept, a rerun resumes)")
