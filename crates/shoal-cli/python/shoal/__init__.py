"""shoal is a command (``shoal -n auto ...``), not a library: this package only carries the
pytest plugin with which ``pytest -n N`` hands the run to it (:mod:`shoal.pytest_plugin`)."""
