"""The review app's code (MONAI Label loads ``main.py`` with this folder on ``sys.path``)."""
