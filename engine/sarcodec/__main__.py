"""``python -m sarcodec``: the same command line as the ``sarcodec`` console script.

torchrun and environments without the console script on PATH start the tool this way.
"""

from sarcodec.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
