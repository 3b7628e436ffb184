"""A storage area behind the services' narrow interfaces (:mod:`qrscp.services.interfaces`).

As Orthanc's ``OrthancStoreRequestHandler``, ``OrthancFindRequestHandler`` and
``OrthancMoveRequestHandler`` serve its DICOM network layer from its archive, these classes serve the
Storage, Query and Retrieve services from one :class:`StorageArea`: they hold the locks, read the index
and write files, so that the services never do.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from qrscp import log
from qrscp.archive import locking, matching
from qrscp.archive.index_values import IndexValues, read_index_values
from qrscp.archive.storage_area import DatabaseError, StorageArea
from qrscp.dicom import conversion, fileformat
from qrscp.dicom.charset import CharsetPolicy
from qrscp.dicom.conversion import OutputFormat, StoredInstance
from qrscp.dicom.elements import raw_text
from qrscp.dicom.identifiers import Identifier
from qrscp.dicom.inflate import InflateLimitExceeded
from qrscp.dicom.status import OUT_OF_RESOURCES, UNABLE_TO_PROCESS
from qrscp.services.interfaces import Instance, RequestFailed, StoreRequest

LOG = log.get_logger(log.DB)

_SOP_INSTANCE_UID = 0x00080018


def _request_failed(error: matching.QueryError) -> RequestFailed:
    return RequestFailed(error.status, str(error), error.log_level)


# -- storage --------------------------------------------------------------------------------------------

class _ImageFile:
    """A new image file of the area receiving one data set (the services' ``StoreTarget``).

    Without a conversion the data set goes straight into the file behind its meta information. With one
    (an output option such as ``+te``) it is spooled as received into an anonymous temporary file in the
    area, then converted into the image file by the data-set reader and writer, which hold its structure,
    not its values: memory stays bounded whatever its size. A deflated data set is inflated to at most
    the area's maxBytesPerStudy (0xA700 beyond: it could not be stored anyway).
    """

    def __init__(self, area: StorageArea, output_format: OutputFormat, request: StoreRequest,
                 path: str, fd: int) -> None:
        self.area = area
        self.output_format = output_format
        self.request = request
        self.path = path
        self._file = os.fdopen(fd, "wb", buffering=1 << 20)
        self._spool = tempfile.TemporaryFile(dir=area.directory) \
            if output_format.needs_conversion(request.transfer_syntax) else None
        self._error: OSError | None = None
        self._values: IndexValues | None = None
        if self._spool is None and output_format.write_file:
            self._write(self._meta(request.transfer_syntax))

    def _meta(self, transfer_syntax: str) -> bytes:
        request = self.request
        return fileformat.file_meta(request.sop_class_uid, request.sop_instance_uid, transfer_syntax,
                                    request.calling_ae_title)

    def _write(self, data: bytes | memoryview) -> None:
        if self._error is None:
            try:
                self._file.write(data)
            except OSError as error:   # a full disk: the rest of the data set is swallowed
                self._error = error

    def write(self, data: memoryview) -> None:
        if self._spool is None:
            self._write(data)
        elif self._error is None:
            try:
                self._spool.write(data)
            except OSError as error:
                self._error = error

    def _convert(self, spool: BinaryIO) -> None:
        fmt = self.output_format
        received = self.request.transfer_syntax
        meta = self._meta(fmt.target_syntax(received)) if fmt.write_file else b""
        spool.flush()
        try:
            source, start = fileformat.open_dataset(spool, 0, received, self.area.max_bytes_per_study,
                                                    self.area.directory)
            self._write(meta)
            conversion.convert(source, start, received, fmt, self._write, len(meta))
        except InflateLimitExceeded as error:
            LOG.error("storeSCP: %s (maxBytesPerStudy)", error)
            raise RequestFailed(OUT_OF_RESOURCES, str(error)) from error
        except ValueError as error:
            raise RequestFailed(UNABLE_TO_PROCESS, str(error)) from error
        except OSError as error:
            self._error = self._error or error

    def finish(self) -> tuple[str, str]:
        try:
            if self._spool is not None and self._error is None:
                with self._spool as spool:
                    self._convert(spool)
            try:
                self._file.close()
            except OSError as error:
                self._error = self._error or error
            if self._error is not None:
                LOG.error("storescp: Cannot write image file: %s", self._error)
                raise RequestFailed(OUT_OF_RESOURCES, str(self._error))
        finally:
            self._close()
        try:
            written = self.output_format.target_syntax(self.request.transfer_syntax)   # for a file without meta
            self._values = read_index_values(self.path, written, self.area.directory, self.area.max_bytes_per_study)
        except InflateLimitExceeded as error:
            LOG.error("storeSCP: %s (maxBytesPerStudy)", error)
            raise RequestFailed(OUT_OF_RESOURCES, str(error)) from error
        except Exception as error:  # whatever the parser makes of a broken data set
            LOG.error("Bad image file: %s (%s)", self.path, error)
            raise RequestFailed(UNABLE_TO_PROCESS, str(error)) from error
        return self._values.sop_class_uid, self._values.sop_instance_uid

    def _close(self) -> None:
        for file in (self._file, self._spool):
            if file is not None:
                try:
                    file.close()
                except OSError:
                    pass

    def commit(self) -> None:
        assert self._values is not None, "commit() before finish()"
        try:
            self.area.register(self.path, self.request.sop_class_uid, self._values)
        except DatabaseError as error:
            raise RequestFailed(error.status, str(error)) from error

    def abandon(self) -> None:
        self._close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
        try:
            self.area.prune_invalid_records()
        except Exception as error:  # pruning is housekeeping: never mask the store's own outcome
            LOG.error("storeSCP: pruning the index failed: %s", error)


class AreaStoreHandler:
    """C-STORE into a storage area: a new image file for each data set, registered once it checks out."""

    def __init__(self, area: StorageArea, output_format: OutputFormat, writable: bool) -> None:
        self.area = area
        self.output_format = output_format
        self.writable = writable

    def begin(self, request: StoreRequest) -> _ImageFile:
        try:
            path, fd = self.area.create_image_file(request.sop_class_uid)
        except OSError as error:
            LOG.error("storeSCP: cannot create image file: %s", error)
            raise RequestFailed(OUT_OF_RESOURCES, str(error)) from error
        return _ImageFile(self.area, self.output_format, request, path, fd)


# -- query ----------------------------------------------------------------------------------------------

class AreaFindHandler:
    """C-FIND over a storage area's index (docs/matching.md): matched under the shared lock, answered after it."""

    def __init__(self, area: StorageArea, check_find: bool, charset_policy: CharsetPolicy,
                 retrieve_ae_title: str) -> None:
        self.area = area
        self.check_find = check_find
        self.charset_policy = charset_policy
        self.retrieve_ae_title = retrieve_ae_title

    def find(self, sop_class_uid: str, identifier: Identifier) -> Iterator[Identifier]:
        try:
            query = matching.parse_find(identifier, matching.FIND_MODELS[sop_class_uid], self.check_find)
            fields = query.response_fields()
            with self.area.records(query.fields()) as table:
                records = [table.record(slot, fields) for slot in matching.find_matches(query, table)]
        except matching.QueryError as error:
            raise _request_failed(error) from error
        return (matching.find_response(query, record, self.retrieve_ae_title, self.charset_policy)
                for record in records)


# -- retrieval ------------------------------------------------------------------------------------------

class AreaRetrieveHandler:
    """C-MOVE and C-GET over a storage area: the matching records, and their files read under a shared
    file lock (docs/locking.md §3), converted for a peer in spool files in the area (``lossy_allowed``: the
    lossy transfer syntaxes the user asked for, the only ones pixel data is encoded lossy into)."""

    def __init__(self, area: StorageArea, check_move: bool, lossy_allowed: frozenset[str] = frozenset()) -> None:
        self.area = area
        self.check_move = check_move
        self.lossy_allowed = lossy_allowed

    def match(self, sop_class_uid: str, identifier: Identifier) -> list[Instance]:
        model = matching.MOVE_MODELS.get(sop_class_uid) or matching.GET_MODELS[sop_class_uid]
        try:
            query = matching.parse_retrieve(identifier, model, self.check_move)
        except matching.QueryError as error:
            raise _request_failed(error) from error
        with self.area.records(query.fields()) as table:
            slots = matching.retrieve_matches(query, table)
            instances = table.values(_SOP_INSTANCE_UID)
            return [Instance(raw_text(sop_class_uid), raw_text(instances[slot]),  # type: ignore[arg-type]
                             filename.decode("utf-8", "surrogateescape"))
                    for slot, (filename, sop_class_uid) in zip(slots, self.area.locations(slots))]

    @contextmanager
    def open(self, instance: Instance) -> Iterator[StoredInstance]:
        with locking.image_for_reading(instance.location) as fd, os.fdopen(os.dup(fd), "rb") as file:
            stored = StoredInstance(fileformat.read_stored_file(instance.location, file), file,
                                    self.area.max_bytes_per_study, self.area.directory, self.lossy_allowed)
            try:
                yield stored
            finally:
                stored.close()
