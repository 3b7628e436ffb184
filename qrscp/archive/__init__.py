"""The storage areas: ``index.dat``, its locks and caches, matching, and the services' interfaces on them."""
