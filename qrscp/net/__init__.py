"""The DICOM upper layer: TCP transport, PDUs, association establishment, DIMSE messages."""
