"""Thin layers over the library: the ``gradcam`` command (``cli``), the web app (``web``) and ``gradcam
evaluate`` (``evaluate``)."""
