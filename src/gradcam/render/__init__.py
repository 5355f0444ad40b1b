"""Pictures people look at: overlays, channel grids, colour scales (``viz``), HTML pages (``report``) and
the one-photo helper ``explain_image`` (``photo``)."""
