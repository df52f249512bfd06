"""``python -m ipvs_fast`` == the ``ipvs-fast-exporter`` console script."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
