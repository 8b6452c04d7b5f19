"""Teachers from other toolkits for pseudo-labelling: a detection-results JSON another tool wrote
(:mod:`.results`), in-process plugins (:mod:`.registry`, ``rapid-layout`` shipped) and the class
maps that put their classes onto a dla-kd category table (:mod:`.class_map`)."""
from .class_map import ClassMap, ClassMapError
from .registry import EXTERNAL_TEACHER_REGISTRY, ExternalTeacher, build_external_teacher, register_external_teacher
from .results import ResultsFileError, ResultsTeacher
