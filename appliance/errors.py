"""Domain errors that mean "the user's input is wrong" (the CLI prints them; the API maps them to 4xx)."""

from appliance.datasets.create import CreateError
from appliance.datasets.nnc import DatasetError
from appliance.project import ProjectError
from appliance.workflows.evaluate import EvaluateError
from models.bundle import BundleError
from models.calibration import CalibrationError
from models.preprocess import PreprocessError
from models.search import SearchError
from models.spec import SpecError

USER_ERRORS: tuple[type[Exception], ...] = (
    BundleError,
    CalibrationError,
    CreateError,
    DatasetError,
    EvaluateError,
    PreprocessError,
    ProjectError,
    SearchError,
    SpecError,
)
