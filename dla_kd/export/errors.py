"""Errors of the export tools."""


class ExportError(RuntimeError):
    """A model cannot be exported to the requested format; the message says why."""


class ExportCheckError(RuntimeError):
    """The exported model does not reproduce the PyTorch model's detections."""
