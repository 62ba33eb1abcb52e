"""The toy dataset's ``DatasetSpec``."""

from leffa_pl.datasets.spec import DatasetSpec, SyntheticRecipe
from leffa_pl.evaluation.protocols import VTON_PAIRED
from toy_dataset.reader import ToyDataModule
from toy_dataset.synthetic import write_synthetic

SPEC = DatasetSpec(name="toy", title="Toy", data_module=ToyDataModule, default_resolution=(64, 48),
                   protocols={"paired": VTON_PAIRED}, synthetic=SyntheticRecipe("toy", write_synthetic))
