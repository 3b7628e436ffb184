"""The programs: ``dcmqrscp`` and ``dcmqridx``, their command lines parsed by DCMTK's rules."""
