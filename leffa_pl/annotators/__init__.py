"""The annotator networks below both the datasets and preprocessing: DensePose (``densepose.py``), where their
weights come from and how downloads are pinned (``weight_files.py``), and the device they run on
(``device.py``). ``leffa_pl.preprocess`` runs them on photos; a dataset (DeepFashion's DensePose filling) uses them
to complete its own files."""
