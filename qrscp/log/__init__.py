"""Logging the way DCMTK's OFLog does it.

Logger names follow DCMTK's (``dcmtk.apps.dcmqrscp``, ``dcmtk.dcmqrdb``, ``dcmtk.dcmnet``, ...), so a
log4cplus properties file written for DCMTK (``-lc``) selects the same lines. The console layout is
DCMTK's ``%P: %m%n``: the first letter of the level, a colon, a space and the message, with every line
of a multi-line message prefixed. Levels are log4cplus's: TRACE, DEBUG, INFO, WARN, ERROR, FATAL.
"""
from __future__ import annotations

import logging
import sys

#: Logger of the dcmqrscp application itself (start-up, configuration, fatal errors).
APP = "dcmtk.apps.dcmqrscp"
#: Logger of the dcmqridx application.
APP_DCMQRIDX = "dcmtk.apps.dcmqridx"
#: Logger of the archive (association handling, services, index): DCMTK's dcmqrdb module.
DB = "dcmtk.dcmqrdb"
#: Logger of the network layer: DCMTK's dcmnet module.
NET = "dcmtk.dcmnet"
#: Logger of data set handling: DCMTK's dcmdata module.
DATA = "dcmtk.dcmdata"
#: Logger of TLS: DCMTK's dcmtls module.
TLS = "dcmtk.dcmtls"
#: DCMTK's switch for progress output: while its level is exactly INFO (``-v``, or a ``-lc`` file such as
#: DCMTK's logger.cfg), every data set a C-STORE receives or a sub-operation sends shows on stdout as
#: ``RECV: ...`` or ``XMIT: ...``, one dot per PDV.
PROGRESS = "dcmtk.dcmqrdb.progress"

TRACE = 5
LEVELS = {
    "off": logging.CRITICAL + 10,
    "fatal": logging.CRITICAL,
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

logging.addLevelName(TRACE, "TRACE")
logging.addLevelName(logging.WARNING, "WARN")
logging.addLevelName(logging.CRITICAL, "FATAL")


def get_logger(name: str) -> logging.Logger:
    """Return the logger ``name`` (one of the module constants above, or a child of one)."""
    return logging.getLogger(name)


def progress_shown() -> bool:
    """Whether data sets received and sent show their progress dots (see :data:`PROGRESS`)."""
    return logging.getLogger(PROGRESS).getEffectiveLevel() == logging.INFO


def print_progress(text: str) -> None:
    """Write progress output to stdout at once, as DCMTK's ``printf`` and ``fflush`` do; a stdout that
    cannot be written to is ignored, as there."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


class StderrHandler(logging.StreamHandler):
    """A handler that writes to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class ConsoleFormatter(logging.Formatter):
    """DCMTK's console layout ``%P: %m%n``, each line of the message prefixed."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = record.levelname[0] + ": "
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        return "\n".join(prefix + line for line in message.split("\n"))


_configured = False


def configured() -> bool:
    """True once :func:`configure` has run in this process (``--arguments`` does it while parsing)."""
    return _configured


def configure(level: str = "warn", config_file: str | None = None, appname: str = "dcmqrscp") -> None:
    """Configure the ``dcmtk`` logger tree as DCMTK's ``-q/-v/-d/-ll/-lc`` options do.

    Without ``config_file`` every line at ``level`` or above goes to stderr in the console layout.
    With it, the log4cplus properties file decides (see :mod:`qrscp.log.log4cplus`).
    """
    global _configured
    _configured = True
    for stream in (sys.stdout, sys.stderr):   # bytes a peer sent outside ASCII are logged as they came
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="surrogateescape")
    root = logging.getLogger("dcmtk")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.propagate = False
    if config_file is not None:
        from qrscp.log import log4cplus as logconfig

        logconfig.apply(config_file, appname=appname)
        return
    handler = StderrHandler()
    handler.setFormatter(ConsoleFormatter())
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
