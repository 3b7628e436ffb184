"""The narrow interfaces through which the DIMSE services reach the archive and the server.

As Orthanc's network layer talks to its archive through ``IStoreRequestHandler``,
``IFindRequestHandler`` and ``IMoveRequestHandler``/``IMoveRequestIterator``, the services here see only
these protocols: where a C-STORE data set goes (:class:`StoreHandler`), which responses a C-FIND gets
(:class:`FindHandler`), which instances a C-MOVE or C-GET sends and how one is read
(:class:`RetrieveHandler`), where a C-MOVE destination is (:class:`MoveDestinations`) and how a
sub-association to it is opened (:class:`SubAssociations`). The index format, its locks and the
configuration tables stay behind them (``qrscp.archive``, ``qrscp.server``).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from qrscp.dicom.conversion import StoredInstance
from qrscp.dicom.identifiers import Identifier
from qrscp.net.association import Association


class RequestFailed(Exception):
    """The archive refuses a request: answer it with ``status``.

    ``str(error)`` is the line the reference logs for it, at ``log_level`` (a ``logging`` level, None:
    the reference logs nothing).
    """

    def __init__(self, status: int, message: str = "", log_level: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.log_level = log_level


# -- storage --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class StoreRequest:
    """What a C-STORE-RQ asks to store, and on which presentation context it came."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax: str
    calling_ae_title: str


class StoreTarget(Protocol):
    """One data set being stored: written fragment by fragment, then finished and committed, or abandoned."""

    #: where the data set is written (named in the log when a store is undone)
    path: str

    def write(self, data: memoryview) -> None:
        """Write the next fragment. A write error is kept and raised by :meth:`finish`, so that the
        association stays in step with the peer."""

    def finish(self) -> tuple[str, str]:
        """The data set is complete: convert it as the output options ask and read it back; its SOP
        Class and SOP Instance UID (``""`` where absent). Raises :class:`RequestFailed`."""

    def commit(self) -> None:
        """Register the stored instance (duplicates, quota). Raises :class:`RequestFailed`."""

    def abandon(self) -> None:
        """Remove whatever was written (never raises)."""


class StoreHandler(Protocol):
    """The storage area of the called AE, as the Storage service sees it."""

    #: whether C-STORE may write to it
    writable: bool

    def begin(self, request: StoreRequest) -> StoreTarget:
        """A new target for the data set of ``request``. Raises :class:`RequestFailed`."""


# -- query ----------------------------------------------------------------------------------------------

class FindHandler(Protocol):
    """Answers C-FIND requests from the index."""

    def find(self, sop_class_uid: str, identifier: Identifier) -> Iterator[Identifier]:
        """Match ``identifier`` of a C-FIND in the information model ``sop_class_uid``; the response
        identifiers, one per matching entity, built one by one as they are consumed. Raises
        :class:`RequestFailed` (before returning) when the request is refused."""


# -- retrieval ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Instance:
    """One instance a C-MOVE or C-GET selects: one sub-operation."""

    sop_class_uid: str
    sop_instance_uid: str
    #: where it is stored (named in the log)
    location: str


class RetrieveHandler(Protocol):
    """Selects and reads the instances of C-MOVE and C-GET requests."""

    def match(self, sop_class_uid: str, identifier: Identifier) -> list[Instance]:
        """The instances ``identifier`` selects in the information model ``sop_class_uid``, in index
        order. Raises :class:`RequestFailed` when the request is refused."""

    def open(self, instance: Instance) -> AbstractContextManager[StoredInstance]:
        """The stored file of ``instance``, held for the ``with`` block as the reference holds it while
        it is sent. Raises ``OSError`` or ``ValueError`` when it cannot be read (the sub-operation fails)."""


@dataclass(frozen=True)
class Destination:
    """A C-MOVE destination: its AE title and presentation address."""

    ae_title: str
    host: str
    port: int


class MoveDestinations(Protocol):
    """Where a C-MOVE may send its instances."""

    def resolve(self, move_destination: str) -> Destination:
        """The destination named ``move_destination``. Raises :class:`RequestFailed` (0xA801) when it
        is unknown or not allowed to this requestor."""


class SubAssociationFailed(Exception):
    """No sub-association could be established; ``str()`` is the reference's condition text."""


class SubAssociations(Protocol):
    """Opens the sub-associations of C-MOVE."""

    def request(self, destination: Destination, instances: list[Instance]) -> Association:
        """An association to ``destination`` with contexts for ``instances``. Raises
        :class:`SubAssociationFailed`."""
