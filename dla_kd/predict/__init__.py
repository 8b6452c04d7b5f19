"""Layout prediction on images, folders and PDF pages, from a checkpoint or an exported model:
``Predictor`` (one page), ``predict_files`` (many files -> JSON + PNG per page)."""
from ..inference.inputs import Failure, InputError
from .batch import RunSummary, predict_files
from .predictor import Predictor
from .records import OUTPUT_FORMATS, page_record

__all__ = ["Predictor", "predict_files", "RunSummary", "Failure", "InputError", "OUTPUT_FORMATS", "page_record"]
