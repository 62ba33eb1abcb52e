"""One folder per dataset (``<name>/``: reader, writer, synthetic copy, ``spec.py``), the ``DatasetSpec`` they
build (``spec.py``) and the registry of them by name (``registry.py``)."""
