"""simadv_explainer: explain a classifier by similar and adversarial generation (Charachon et al., ICPR 2020).

Configs reference this package as ``scripts.<module>.<Name>`` after ``"$import scripts"``; the submodules are
imported here so that those references resolve.
"""

from .errors import BundleInputError, install_excepthook

install_excepthook()

from . import (  # noqa: E402
    benchmark,
    checkpoint,
    classifier,
    data,
    evaluator,
    explainers,
    handlers,
    inference,
    losses,
    metrics,
    networks,
    pipeline,
    report,
    trainer,
)
