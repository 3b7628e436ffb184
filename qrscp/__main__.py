"""``python -m qrscp``: the same as the ``dcmqrscp`` console script."""
import sys

from qrscp.main import main

sys.exit(main())
