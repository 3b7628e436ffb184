"""``python -m qrscp``: the same as the ``dcmqrscp`` console script."""
import sys

from qrscp.cli.dcmqrscp import main

sys.exit(main())
