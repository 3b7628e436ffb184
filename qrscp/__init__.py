"""qrscp: a drop-in replacement for DCMTK's dcmqrscp DICOM image archive."""

__version__ = "0.1.0"

#: The DCMTK release whose behaviour qrscp reproduces.
DCMTK_VERSION = "3.6.7"
