"""``python -m stylecast.server FLAGS_JSON``: the server process ``stylecast serve`` execs into.

``FLAGS_JSON`` is the object :func:`stylecast.server.app.main` takes (CLI values, None = unset).
Exec'ing a fresh interpreter keeps the CLI's own libraries (typer, and the pydantic it validates
flags with: about 10 MB resident) out of the long-running server; the process id stays the same."""

import json
import sys

from stylecast.server.app import main

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stylecast.server FLAGS_JSON (run `stylecast serve` instead)")
    main(json.loads(sys.argv[1]))
