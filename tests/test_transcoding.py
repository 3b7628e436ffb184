"""Transcoding on C-MOVE and C-GET (issue 12; README "Transcoding", docs/association.md §4), with real peers.

A study of compressed and uncompressed instances is made at test time (pydicom's test files with new UIDs,
DCMTK's ``dcmcjpls``/``dcmcrle``, pydicom's JPEG 2000 encoder): JPEG baseline (YBR_FULL_422, one and 30
frames), 12-bit JPEG extended, JPEG 2000 lossless and lossy, JPEG-LS lossless, RLE (grey, and RGB of two
frames), uncompressed CT. DCMTK's ``storescp`` (uncompressed only by default, ``+xv`` and friends for a
compressed preference) and ``getscu`` receive it; what they store is compared with pydicom's decoding of
the original. Then: compression on request (``-xv/-xt/-xr/-xd``, lossy ``-xw``), a corrupt stream, a
large multi-frame object under a memory bound, and the server without the ``codecs`` extra.
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
import sys
import venv
from pathlib import Path

import numpy as np
import pytest
from conftest import Server, run_dcmtk, run_qrscp, simple_config
from health import MemoryGuard
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import encapsulate
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet
from test_retrieve import AE_TITLE, final, getscu, movescu, storescp, study_keys

from qrscp.dicom import transcoding

pytestmark = pytest.mark.dcmtk

STUDY = "1.2.826.0.1.3680043.8.498.1212.1"
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2")  # -xe order


def _rewrite(source: str | Path, path: Path, number: int, **changes: object) -> Path:
    """``source`` with the study's UIDs and instance ``number`` (pixel data as it is), saved at ``path``."""
    dataset = dcmread(source)
    dataset.PatientID, dataset.PatientName = "TRANSCODE", "Transcode^Test"
    dataset.StudyInstanceUID = STUDY
    dataset.SeriesInstanceUID = f"{STUDY}.{number}"
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = f"{STUDY}.{number}.1"
    for keyword, value in changes.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def _dcmtk(tool: str, source: Path, path: Path, *options: str) -> Path:
    result = run_dcmtk(tool, *options, str(source), str(path))
    assert result.returncode == 0, result.stderr.decode()
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The study's files by name (see the module's docstring)."""
    transcoding.preload()   # this process decodes the originals too, 12-bit JPEG included
    directory = tmp_path_factory.mktemp("study")
    files = {"ct": _rewrite(get_testdata_file("CT_small.dcm"), directory / "ct.dcm", 1),
             "jpeg_us": _rewrite(get_testdata_file("examples_ybr_color.dcm"), directory / "jpeg_us.dcm", 2),
             "jpeg_sc": _rewrite(get_testdata_file("SC_rgb_dcmtk_+eb+cy+np.dcm"), directory / "jpeg_sc.dcm", 3),
             "jpeg12": _rewrite(get_testdata_file("JPEG-lossy.dcm"), directory / "jpeg12.dcm", 4),
             "j2k_lossy": _rewrite(get_testdata_file("JPEG2000.dcm"), directory / "j2k_lossy.dcm", 5),
             "rle_rgb": _rewrite(get_testdata_file("SC_rgb_rle_2frame.dcm"), directory / "rle_rgb.dcm", 6)}
    for number, (name, tool) in enumerate((("jls", "dcmcjpls"), ("rle", "dcmcrle")), start=7):
        plain = _rewrite(get_testdata_file("CT_small.dcm"), directory / f"{name}-plain.dcm", number)
        files[name] = _dcmtk(tool, plain, directory / f"{name}.dcm")
        plain.unlink()
    j2k = dcmread(_rewrite(get_testdata_file("CT_small.dcm"), directory / "j2k.dcm", 9))
    j2k.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    j2k.save_as(directory / "j2k.dcm", enforce_file_format=True)
    files["j2k"] = directory / "j2k.dcm"
    return files


def syntax_of(path: Path) -> str:
    return str(dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID)


def received(directory: Path) -> dict[str, Dataset]:
    """SOP Instance UID -> data set of every file in ``directory``."""
    datasets = {}
    for path in sorted(directory.iterdir()):
        if path.is_file():
            dataset = dcmread(path)
            datasets[str(dataset.SOPInstanceUID)] = dataset
    return datasets


def assert_same_pixels(original: Path, copy: Dataset) -> None:
    """``copy`` holds what pydicom decodes from ``original`` (YCbCr JPEG as RGB), colour by pixel."""
    source = dcmread(original)
    assert np.array_equal(source.pixel_array, copy.pixel_array), original.name
    assert copy.SOPInstanceUID == source.SOPInstanceUID
    if copy.SamplesPerPixel > 1:
        assert copy.PlanarConfiguration == 0 or copy.file_meta.TransferSyntaxUID == RLELossless


def serve(directory: Path, files: list[Path], *options: str, host_table: str = "",
          python: str = sys.executable) -> Server:
    """Our server on its own area in ``directory``, holding ``files`` as they are (registered by dcmqridx,
    so that every transfer syntax is stored whatever the server accepts)."""
    area = directory / "area"
    area.mkdir(parents=True)
    copies = [str(shutil.copy(path, area / path.name)) for path in files]
    result = run_qrscp(str(area), *copies, module="qrscp.cli.dcmqridx")
    assert result.returncode == 0, result.stderr.decode()
    config = simple_config({AE_TITLE: f"{area} RW (200, 1024mb) ANY"}, host_table=host_table)
    return Server(directory, config, *options, interpreter=(python,))


# --- decompression ----------------------------------------------------------------------------------------

def test_move_to_a_receiver_of_uncompressed_data(tmp_path: Path, study: dict[str, Path]) -> None:
    """DCMTK's storescp with its defaults gets every instance, decoded, pixel for pixel what pydicom
    decodes from the original; SOP Instance UIDs kept; JPEG's YCbCr arrives as RGB, Lossy Image
    Compression "01"."""
    with storescp(tmp_path / "dest") as port, serve(
            tmp_path / "server", list(study.values()), host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY))
    assert final(responses) == (0x0000, str(len(study)), "0", "0"), output
    copies = received(tmp_path / "dest")
    assert len(copies) == len(study)
    for name, path in study.items():
        copy = copies[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        assert copy.file_meta.TransferSyntaxUID in UNCOMPRESSED, name
        assert_same_pixels(path, copy)
    for name in ("jpeg_us", "jpeg_sc"):
        copy = copies[str(dcmread(study[name], stop_before_pixels=True).SOPInstanceUID)]
        assert (copy.PhotometricInterpretation, copy.LossyImageCompression) == ("RGB", "01")
        assert int(copy.get("NumberOfFrames", 1)) == int(dcmread(study[name]).get("NumberOfFrames", 1))


def test_get_by_a_receiver_of_uncompressed_data(tmp_path: Path, study: dict[str, Path]) -> None:
    """DCMTK's getscu (uncompressed syntaxes only) gets every instance of the study decoded."""
    with serve(tmp_path / "server", list(study.values())) as server:
        responses, output = getscu(server.port, "-S", study_keys(STUDY), tmp_path / "got")
    assert final(responses) == (0x0000, str(len(study)), "0", "0"), output
    copies = received(tmp_path / "got")
    for path in study.values():
        copy = copies[str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)]
        assert copy.file_meta.TransferSyntaxUID in UNCOMPRESSED
        assert_same_pixels(path, copy)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "MR_small_jp2klossless.dcm", "J2K_pixelrep_mismatch.dcm",
                                  "SC_rgb_gdcm_KY.dcm", "GDCMJ2K_TextGBR.dcm", "693_J2KI.dcm"])
def test_jpeg_2000_decoded_on_every_core_as_pydicom_decodes_it(name: str) -> None:
    """qrscp decodes JPEG 2000 through imagecodecs' OpenJPEG on every core; the pixels, their type and
    photometric interpretation are pylibjpeg-openjpeg's (pydicom's plugin): lossless and lossy, signed,
    a pixel representation that contradicts the codestream, RGB and YBR_RCT."""
    dataset = dcmread(get_testdata_file(name))
    decoder = transcoding._decoder(str(dataset.file_meta.TransferSyntaxUID))
    ours, our_properties = decoder.as_array(dataset, decoding_plugin=transcoding.DECODERS[
        str(dataset.file_meta.TransferSyntaxUID)].plugin)
    theirs, their_properties = decoder.as_array(dataset, decoding_plugin="pylibjpeg")
    assert transcoding.DECODERS[str(dataset.file_meta.TransferSyntaxUID)].plugin == "imagecodecs"
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    assert our_properties["photometric_interpretation"] == their_properties["photometric_interpretation"]


def test_sub_association_proposes_the_stored_syntax_and_its_conversions(tmp_path: Path,
                                                                       study: dict[str, Path]) -> None:
    """Per SOP class, the ``-x`` context, then one with the compressed stored syntax followed by the ``-x``
    syntaxes it converts to; a peer that takes the stored syntax gets the file's own pixel data."""
    requested: list[tuple[str, list[str]]] = []
    syntaxes: dict[str, str] = {}

    def on_store(event) -> int:
        requested[:] = [(c.abstract_syntax, list(c.transfer_syntax)) for c in event.assoc.requestor.requested_contexts]
        syntaxes[event.request.AffectedSOPInstanceUID] = event.context.transfer_syntax
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.add_supported_context(CTImageStorage, [JPEGLSLossless, *UNCOMPRESSED])
    receiver = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    port = receiver.socket.getsockname()[1]
    try:
        with serve(tmp_path / "server", [study["ct"], study["jls"]], "-xe",
                   host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
            responses, output = movescu(server.port, "-S", study_keys(STUDY))
    finally:
        receiver.shutdown()
    assert final(responses) == (0x0000, "2", "0", "0"), output
    assert requested == [(CTImageStorage, list(UNCOMPRESSED)), (CTImageStorage, [JPEGLSLossless, *UNCOMPRESSED])]
    uid = str(dcmread(study["jls"], stop_before_pixels=True).SOPInstanceUID)
    assert syntaxes[uid] == JPEGLSLossless


# --- compression on request --------------------------------------------------------------------------------

@pytest.mark.parametrize("option, preference, syntax", [
    ("-xv", "+xv", JPEG2000Lossless), ("-xt", "+xt", JPEGLSLossless), ("-xr", "+xr", RLELossless),
    ("-xd", "+xd", DeflatedExplicitVRLittleEndian)], ids=["j2k", "jpeg-ls", "rle", "deflated"])
def test_compression_on_request(tmp_path: Path, study: dict[str, Path], option: str, preference: str,
                                syntax: str) -> None:
    """With a ``-x`` option proposing a lossless compressed syntax, a receiver that prefers it gets the
    uncompressed and the compressed (lossless) instances in it, same UIDs, same pixels."""
    names = ("ct", "rle_rgb", "j2k", "jls")
    with storescp(tmp_path / "dest", preference) as port, serve(
            tmp_path / "server", [study[name] for name in names], option,
            host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY))
    assert final(responses) == (0x0000, str(len(names)), "0", "0"), output
    copies = received(tmp_path / "dest")
    for name in names:
        copy = copies[str(dcmread(study[name], stop_before_pixels=True).SOPInstanceUID)]
        assert copy.file_meta.TransferSyntaxUID == syntax, name
        assert_same_pixels(study[name], copy)
        assert "LossyImageCompression" not in copy or name.startswith("jpeg")


def test_lossy_compression_only_on_request(tmp_path: Path, study: dict[str, Path]) -> None:
    """``-xw``: an uncompressed CT reaches a receiver that prefers lossy JPEG 2000 compressed 10:1 as a new
    SOP instance (PS3.3 C.7.6.1.1.5), within the codec's tolerance. Without it, nothing is compressed
    lossy: a C-GET offering only lossy JPEG 2000 fails its sub-operation."""
    ct_uid = str(dcmread(study["ct"], stop_before_pixels=True).SOPInstanceUID)
    with storescp(tmp_path / "dest", "+xw") as port, serve(
            tmp_path / "server", [study["ct"]], "-xw", host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY))
    assert final(responses) == (0x0000, "1", "0", "0"), output
    (copy,) = received(tmp_path / "dest").values()
    assert copy.file_meta.TransferSyntaxUID == JPEG2000
    assert copy.SOPInstanceUID != ct_uid and copy.SourceImageSequence[0].ReferencedSOPInstanceUID == ct_uid
    assert (copy.LossyImageCompression, copy.LossyImageCompressionMethod, copy.ImageType[0]) == \
        ("01", "ISO_15444_1", "DERIVED")
    assert 5 < float(copy.LossyImageCompressionRatio) < 20
    original = dcmread(study["ct"]).pixel_array.astype(float)
    error = np.sqrt(np.mean((copy.pixel_array.astype(float) - original) ** 2))
    assert error < 0.02 * np.ptp(original)

    ae = AE(ae_title="GETSCU")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, [JPEG2000])
    with serve(tmp_path / "plain", [study["ct"]]) as server:
        association = ae.associate("127.0.0.1", server.port, ae_title=AE_TITLE,
                                   ext_neg=[build_role(CTImageStorage, scp_role=True)],
                                   evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)])
        identifier = Dataset()
        identifier.QueryRetrieveLevel, identifier.StudyInstanceUID = "STUDY", STUDY
        statuses = [(status.Status, dataset) for status, dataset in
                    association.send_c_get(identifier, StudyRootQueryRetrieveInformationModelGet)]
        association.release()
    status, failed = statuses[-1]
    assert status == 0xA702 and failed.FailedSOPInstanceUIDList == ct_uid


# --- failures and bounds ------------------------------------------------------------------------------------

def test_corrupt_stream_is_a_failed_sub_operation(tmp_path: Path, study: dict[str, Path]) -> None:
    """A JPEG 2000 frame that is noise, and one whose codestream is larger than its data set says, fail
    their own sub-operations (listed in the Failed SOP Instance UID List); the others arrive, and the
    server goes on."""
    noise = dcmread(study["j2k"])
    noise.PixelData = encapsulate([np.random.default_rng(12).integers(0, 256, 8000, dtype=np.uint8).tobytes()])
    noise.SOPInstanceUID = noise.file_meta.MediaStorageSOPInstanceUID = f"{STUDY}.20.1"
    noise.save_as(tmp_path / "noise.dcm", enforce_file_format=True)
    larger = dcmread(study["j2k"])
    larger.Rows = larger.Rows // 2
    larger.SOPInstanceUID = larger.file_meta.MediaStorageSOPInstanceUID = f"{STUDY}.21.1"
    larger.save_as(tmp_path / "larger.dcm", enforce_file_format=True)
    with storescp(tmp_path / "dest") as port, serve(
            tmp_path / "server", [study["ct"], tmp_path / "noise.dcm", tmp_path / "larger.dcm", study["jls"]],
            host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
        responses, output = movescu(server.port, "-S", study_keys(STUDY))
        again, _ = movescu(server.port, "-S", study_keys(STUDY))
        log = server.log
    assert final(responses) == (0xB000, "2", "2", "0"), output
    assert f"{STUDY}.20.1\\{STUDY}.21.1" in output or f"{STUDY}.21.1\\{STUDY}.20.1" in output
    assert final(again) == (0xB000, "2", "2", "0")
    assert "cannot decode frame 1" in log and "the codestream is 128x128" in log
    assert len(received(tmp_path / "dest")) == 2


def test_large_multi_frame_object_in_bounded_memory(tmp_path: Path) -> None:
    """200 MB of decoded pixel data (400 RLE frames of 512x512x16 bits) moved to an uncompressed-only
    receiver: the worker decodes frame by frame into a spool and sends from it, never holding the object."""
    frames, rows = 400, 512
    ramp = np.arange(rows * rows, dtype=np.uint16).reshape(rows, rows) % 4096
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.3"   # Multi-frame Grayscale Word Secondary Capture
    dataset.SOPInstanceUID = f"{STUDY}.30.1"
    dataset.file_meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.PatientID, dataset.StudyInstanceUID, dataset.SeriesInstanceUID = "BIG", STUDY, f"{STUDY}.30"
    dataset.Modality = "OT"
    dataset.Rows = dataset.Columns = rows
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 12, 11, 0
    dataset.NumberOfFrames = frames
    pixels = np.broadcast_to(ramp, (frames, rows, rows))
    dataset.compress(RLELossless, pixels, encoding_plugin="pylibjpeg", generate_instance_uid=False)
    dataset.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    del pixels, dataset
    with storescp(tmp_path / "dest") as port, serve(
            tmp_path / "server", [tmp_path / "big.dcm"], host_table=f"DEST = (DEST, 127.0.0.1, {port})") as server:
        with MemoryGuard(server, limit=160 << 20) as guard:
            responses, output = movescu(server.port, "-S", study_keys(STUDY), timeout=180)
    guard.assert_bounded()
    assert final(responses) == (0x0000, "1", "0", "0"), output
    (path,) = (tmp_path / "dest").iterdir()
    copy = dcmread(path, stop_before_pixels=True)
    assert copy.file_meta.TransferSyntaxUID in UNCOMPRESSED and int(copy.NumberOfFrames) == frames
    assert path.stat().st_size > frames * rows * rows * 2
    with open(path, "rb") as file:        # the last frame, without reading 200 MB into this process
        file.seek(path.stat().st_size - rows * rows * 2)
        last = np.frombuffer(file.read(), dtype="<u2").reshape(rows, rows)
    assert np.array_equal(last, ramp)


# --- without the codecs extra -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def python_without_codecs(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python where qrscp is installed without its ``codecs`` extra: a virtual environment holding only
    qrscp's own dependencies (pydicom, psutil, portalocker) — no numpy, no codec."""
    directory = tmp_path_factory.mktemp("plain-venv")
    venv.EnvBuilder(symlinks=True, with_pip=False).create(directory)
    site_packages = next((directory / "lib").glob("python3*/site-packages"))
    for module in ("pydicom", "psutil", "portalocker"):
        for location in (Path(__import__(module).__file__).parent,
                         Path(importlib.metadata.distribution(module)._path)):   # its metadata is read too
            os.symlink(location, site_packages / location.name)
    (site_packages / "qrscp.pth").write_text(str(Path(__file__).resolve().parents[1]) + "\n")
    return str(directory / "bin" / "python")


def test_without_the_codecs_extra(tmp_path: Path, study: dict[str, Path], python_without_codecs: str) -> None:
    """As DCMTK: a JPEG instance a receiver does not accept is a failed sub-operation (0xA702, listed);
    the log names the extra once, at warning level."""
    jpeg_uid = str(dcmread(study["jpeg_sc"], stop_before_pixels=True).SOPInstanceUID)
    with storescp(tmp_path / "dest") as port, serve(tmp_path / "server", [study["jpeg_sc"], study["j2k"]],
                                                    host_table=f"DEST = (DEST, 127.0.0.1, {port})",
                                                    python=python_without_codecs) as server:
        for _ in range(2):
            responses, output = movescu(server.port, "-S", study_keys(STUDY), timeout=60)
            assert final(responses) == (0xA702, "0", "2", "0"), output
            assert jpeg_uid in output
        log = server.log
    assert log.count("W: ") == 1 and log.count(transcoding.INSTALL_HINT) == 1, log
    assert "'codecs' extra would have converted it to Explicit VR Little Endian" in log
    assert not list((tmp_path / "dest").iterdir())
