"""The transcoding rows: C-MOVE of a compressed study to a receiver that accepts only uncompressed syntaxes.

The receiver is the run's ``storescp`` (DCMTK's defaults: uncompressed only), so every instance must be
decoded on its way. The study: 512x512 16-bit CT frames (CT_small scaled up, with noise), compressed by
pydicom's encoders (the ``codecs`` extra) in JPEG 2000 lossless and in JPEG-LS lossless. qrscp and DCMTK get
the files registered into an area of their own with their ``dcmqridx`` (qrscp's default options would
refuse compressed C-STOREs); Orthanc gets them by C-STORE. Orthanc decodes JPEG-LS with DCMTK's codecs and
JPEG 2000 only with its GDCM plugin (Debian's ``orthanc-gdcm``, loaded when installed); DCMTK's dcmqrscp
decodes nothing. Rates are instances and decoded megabytes delivered per second.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, generate_uid

from benchlib.clients import ClientError, movescu
from benchlib.servers import CLIENT_AE, REPO_ROOT, CtnServer, DcmtkServer, OrthancServer, Server, dcmtk, dcmtk_env

#: (row key suffix, transfer syntax, its name in the rows, the storescu option that proposes it)
SYNTAXES = (("j2k", JPEG2000Lossless, "JPEG 2000 lossless", "-xv"),
            ("jls", JPEGLSLossless, "JPEG-LS lossless", "-xt"))
AREA = "TX"
SIZE = 512


def row_labels(count: int) -> list[tuple[str, str]]:
    """(key, label) of the rows: inst/s and MB/s for each syntax."""
    rows = []
    for key, _syntax, name, _option in SYNTAXES:
        rows.append((f"transcode:{key}", f"C-MOVE of a {count}-instance {name} study to an uncompressed-only "
                                         f"receiver, inst/s"))
        rows.append((f"transcode:{key}:mb", f"C-MOVE of the {name} study, decoded MB/s"))
    return rows


def write_studies(directory: Path, count: int) -> dict[str, tuple[str, list[Path]]]:
    """One study per syntax: key -> (Study Instance UID, files)."""
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    scale = SIZE // source.Rows
    base = np.kron(source.pixel_array.astype(np.int32), np.ones((scale, scale), dtype=np.int32))
    rng = np.random.default_rng(2012)
    studies = {}
    for key, syntax, _name, _option in SYNTAXES:
        study, series = generate_uid(), generate_uid()
        files = []
        (directory / key).mkdir(parents=True, exist_ok=True)
        for number in range(count):
            dataset = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
            dataset.PatientID, dataset.StudyInstanceUID = "TRANSCODE", study
            dataset.SeriesInstanceUID = series
            dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
            dataset.Rows = dataset.Columns = SIZE
            pixels = np.clip(base + rng.integers(-8, 9, base.shape), -1024, 3071).astype(np.int16)
            dataset.compress(syntax, pixels, generate_instance_uid=False)
            path = directory / key / f"{number + 1}.dcm"
            dataset.save_as(path, enforce_file_format=True)
            files.append(path)
        studies[key] = (study, files)
    return studies


def _register(server: CtnServer, files: list[Path], timeout: float) -> None:
    """Copy ``files`` into the server's area and register them with its own dcmqridx."""
    area = server.area_directory(AREA)
    copies = [str(shutil.copy(path, area / f"{path.parent.name}-{path.name}")) for path in files]
    if isinstance(server, DcmtkServer):
        command = [dcmtk("dcmqridx"), str(area), *copies]
    else:
        command = [sys.executable, "-m", "qrscp.cli.dcmqridx", str(area), *copies]
    env = dict(dcmtk_env(), PYTHONPATH=str(REPO_ROOT))
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise ClientError(f"dcmqridx: {result.stderr.strip()[-300:]}")


def prepare(server: Server, studies: dict[str, tuple[str, list[Path]]], timeout: float) -> None:
    """Put every study into the server's area ``TX`` (once)."""
    files = [path for _study, paths in studies.values() for path in paths]
    if isinstance(server, CtnServer):
        _register(server, files, timeout)
    elif isinstance(server, OrthancServer):
        endpoint = server.endpoint(AREA)
        for key, _syntax, _name, option in SYNTAXES:
            result = subprocess.run([dcmtk("storescu"), option, "-aec", endpoint.called_ae, "-aet", CLIENT_AE,
                                     "127.0.0.1", str(endpoint.port), *map(str, studies[key][1])],
                                    env=dcmtk_env(), capture_output=True, text=True, timeout=timeout)
            if result.returncode != 0 or "E:" in result.stdout + result.stderr:
                raise ClientError(f"storing the {key} study into Orthanc: {result.stderr.strip()[-300:]}")


def measure(server: Server, receiver, studies: dict[str, tuple[str, list[Path]]], rows: dict, timeout: float) -> None:
    """C-MOVE each study to the receiver; record inst/s and decoded MB/s (an error cell when not every
    instance arrived)."""
    endpoint = server.endpoint(AREA)
    for key, (study, files) in studies.items():
        receiver.clear()
        try:
            try:
                seconds = movescu(endpoint, study, timeout)
            except ClientError:
                seconds = 0.0
            received = sorted(receiver.directory.iterdir())
            if len(received) != len(files):
                raise ClientError(f"{len(received)} of {len(files)} instances arrived (the server could not "
                                  f"transcode the others)")
            megabytes = sum(path.stat().st_size for path in received) / 1e6
            rows[f"transcode:{key}"].record(server.name, len(files) / seconds)
            rows[f"transcode:{key}:mb"].record(server.name, megabytes / seconds)
        except ClientError as error:
            rows[f"transcode:{key}"].fail(server.name, str(error))
            rows[f"transcode:{key}:mb"].fail(server.name, str(error))

