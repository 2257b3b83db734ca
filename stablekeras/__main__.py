"""``python -m stablekeras``: the command line of :mod:`stablekeras.cli`."""

from stablekeras.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
