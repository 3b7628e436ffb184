"""DICOM data: elements, the one data-set reader and writer, files, identifiers, character sets, UIDs."""
