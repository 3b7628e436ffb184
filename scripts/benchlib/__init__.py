"""Helpers of ``scripts/bench``, the side-by-side benchmark of qrscp, DCMTK's dcmqrscp and Orthanc."""
