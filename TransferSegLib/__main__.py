"""``python -m TransferSegLib``: the ``transferseg`` command line, and the job worker.

``run-job DIR`` is dispatched before the command line is built, so a worker (in
Slicer: ``PythonSlicer -m TransferSegLib run-job DIR``) starts without importing
the subcommands it does not need.
"""

import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["run-job"]:
        from TransferSegLib.jobs.worker import main as run_job

        return run_job(args[1:])
    from TransferSegLib.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
