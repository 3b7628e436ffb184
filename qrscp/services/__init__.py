"""The DIMSE services (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET) and the narrow interfaces they reach the archive by."""
