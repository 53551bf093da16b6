"""``python -m nncheck``: the command line (``nncheck.cli``)."""

from nncheck.cli import main

if __name__ == "__main__":
    main()
