"""The annotator networks, below both the datasets and preprocessing: DensePose (``densepose.py``), body keypoints
(``keypoints.py``), a photo's annotation and the inpaint mask made of it (``annotation.py``), where the networks'
weights come from and how downloads are pinned (``weight_files.py``), the device they run on (``device.py``).
``leffa_pl.preprocess`` runs them on photos (with the human parser, ``preprocess/parsing.py``); the datasets use
them to write their layouts and, for DeepFashion, to fill in missing DensePose maps."""
