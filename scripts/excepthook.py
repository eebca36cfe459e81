"""Importing this module makes the process print an uncaught :class:`~scripts.errors.BundleInputError` as one line
and exit with status 1 (:func:`scripts.errors.install_excepthook`).

Entry points import it: every bundle config lists ``"$import scripts.excepthook"`` in ``imports`` (MONAI evaluates
the import statements of a config before anything else, while a plain expression there would never run), and
``scripts.pipeline`` calls :func:`~scripts.errors.install_excepthook` itself. Importing ``scripts`` as a library
leaves ``sys.excepthook`` alone.
"""

from .errors import install_excepthook

install_excepthook()
