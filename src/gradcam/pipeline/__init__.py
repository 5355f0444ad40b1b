"""Many photos: the typed per-photo record and run manifest (``records``), the one writer that turns an
explanation into files and a record (``writer``), and the engines that feed it (``local``, ``ray``)."""
