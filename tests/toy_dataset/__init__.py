"""A toy fourth dataset, defined entirely in this folder: its layout and reader (``reader.py``), its synthetic
copy (``synthetic.py``) and its ``DatasetSpec`` (``spec.py``). ``registry.register(spec.SPEC)`` is all it takes
for the commands to serve it (tests/test_toy_dataset.py)."""
