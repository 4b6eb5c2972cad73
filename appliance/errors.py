"""Domain errors: what went wrong in the user's terms. The CLI prints them as one line; the API
maps each to its HTTP status in one table (``appliance.api.errors``), with the message unchanged.

The generic ones below are raised by storage, the registry and the workflows; the others belong
to the module that detects them (``SourceError``, ``BundleError``, ``PreprocessError``, …) and are
listed in :func:`domain_errors`.
"""

from __future__ import annotations


class NotFound(LookupError):
    """A named thing (inspection, alert, model version, job, dataset, source) does not exist."""

    def __str__(self) -> str:  # LookupError's str() quotes its argument
        return str(self.args[0]) if self.args else ""


class Conflict(Exception):
    """The request clashes with what is stored (exists already, active model, nothing to roll back)."""


class Unavailable(Exception):
    """The appliance cannot do it now (no active model, a source delivered no frame in time)."""


class TooLarge(ValueError):
    """An upload or an archive member is larger than allowed."""


class InvalidInput(ValueError):
    """A request value the appliance cannot use (a bad name, an archive member it refuses)."""


class Unreadable(ValueError):
    """An uploaded file that is not what it claims to be (an image that does not decode)."""


def domain_errors() -> dict[type[Exception], int]:
    """Every domain error with its HTTP status (most specific first). The CLI treats the 4xx ones
    as user errors: one line on stderr, exit 2."""
    from appliance.datasets.create import CreateError
    from appliance.datasets.images import ImageFolderError
    from appliance.datasets.nnabla_proto import ProtoError
    from appliance.datasets.nnc import DatasetError
    from appliance.datasets.nnc_graph import GraphError
    from appliance.datasets.nnp import NnpError
    from appliance.datasets.sdcproj_graph import SdcprojError
    from appliance.project import ProjectError
    from appliance.settings import SettingsError
    from appliance.workflows.evaluate import EvaluateError
    from connectors.base import SourceError
    from models.bundle import BundleError
    from models.calibration import CalibrationError
    from models.decision import ThresholdError
    from models.preprocess import PreprocessError
    from models.search import SearchError
    from models.spec import SpecError

    return {
        NotFound: 404,
        Conflict: 409,
        Unavailable: 503,
        TooLarge: 413,
        SourceError: 400,
        Unreadable: 400,
        InvalidInput: 422,
        ThresholdError: 422,
        BundleError: 422,
        CalibrationError: 422,
        CreateError: 422,
        ImageFolderError: 422,
        DatasetError: 422,
        GraphError: 422,
        NnpError: 422,
        ProtoError: 422,
        SdcprojError: 422,
        EvaluateError: 422,
        PreprocessError: 422,
        ProjectError: 422,
        SearchError: 422,
        SettingsError: 422,
        SpecError: 422,
    }


def user_errors() -> tuple[type[Exception], ...]:
    """The errors that mean "the user's input is wrong" (the CLI's one-line errors, a failed job's
    message without the error's kind)."""
    return tuple(kind for kind, status in domain_errors().items() if status < 500)
