"""Pages to trace and check an export on: image files, or a synthetic page of the model's dataset
style when none is given."""
import numpy as np
from detectron2.data import MetadataCatalog
from detectron2.data.detection_utils import read_image

from ..data.synthetic import STYLES, render_page


class UnreadableImageError(ValueError):
    """A file that cannot be decoded as an image: ``path``, ``reason``; the message names both."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def read_image_rgb(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (EXIF orientation applied, grey/alpha converted)."""
    try:
        return read_image(path, format="RGB")
    except FileNotFoundError:
        raise UnreadableImageError(path, "no such file") from None
    except (OSError, ValueError, SyntaxError) as e:  # PIL: UnidentifiedImageError, truncated files
        raise UnreadableImageError(path, f"unreadable image ({type(e).__name__}: {e})") from e


def synthetic_page(dataset: str = "", size=(612, 792), index: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 RGB synthetic page (``size`` = (W, H)) in the style of ``dataset``'s
    category table (publaynet or doclaynet; doclaynet otherwise)."""
    table = MetadataCatalog.get(dataset).get("category_table", "") if dataset else ""
    style = table if table in STYLES else "doclaynet"
    return render_page(style, tuple(size), seed=0, split="export_sample", index=index).image
