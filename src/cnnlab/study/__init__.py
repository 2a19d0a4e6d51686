"""Ready-made studies of the book's exercises: variants of a model trained on one budget, compared and summarised.

``cnnlab study --list`` names them; ``run_study("lenet-activation-pooling")`` runs one (see :mod:`.runner`).
"""

from cnnlab.study.runner import StudyResult, run_study
from cnnlab.study.spec import Study, Variant, list_studies, load_study

__all__ = ["Study", "StudyResult", "Variant", "list_studies", "load_study", "run_study"]
