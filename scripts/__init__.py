"""simadv_explainer: explain a classifier by similar and adversarial generation (Charachon et al., ICPR 2020).

Configs reference this package as ``scripts.<module>.<Name>`` after ``"$import scripts"``; the submodules are
imported here so that those references resolve. Importing the package changes no global state: the entry points
install the one-line error hook themselves (:mod:`scripts.excepthook`).
"""

from . import (
    benchmark,
    ceiling,
    checkpoint,
    classifier,
    data,
    errors,
    evaluator,
    explainers,
    figures,
    handlers,
    inference,
    losses,
    metrics,
    networks,
    records,
    report,
    timing,
    tracking,
    trainer,
)

from .errors import BundleInputError
