"""dla-kd: knowledge distillation for document layout analysis on Detectron2.

Detectron2 and torch are deliberately *not* in ``install_requires``: Detectron2 is not on the
package index under its own name and users bring their own build (see docs/install.md).
"""
from setuptools import find_packages, setup

setup(
    name="dla-kd",
    version="0.1.0",
    description="Knowledge distillation for document layout analysis (Detectron2)",
    packages=find_packages(include=["dla_kd", "dla_kd.*"]),
    python_requires=">=3.8",
    install_requires=[
        "numpy",
        "Pillow",
        "pycocotools",
        "fvcore",
        "iopath",
        "timm",
        "tqdm",
        "matplotlib",
    ],
    extras_require={
        "export": ["onnx", "onnxruntime"],
        "pdf": ["pypdfium2"],
        # the rapid-layout pseudo-labelling teacher (docs/external_teachers.md); it asks for
        # opencv-python: beside opencv-python-headless<4.11 install it with --no-deps + requests
        "rapid_layout": ["rapid-layout>=0.4,<0.5"],
        "slurm": ["submitit"],
        "test": ["pytest"],
    },
    include_package_data=True,
    package_data={"dla_kd.predict.external": ["class_maps/*.yaml"]},  # shipped class maps (--class-map NAME)
)
