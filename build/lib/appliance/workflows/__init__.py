"""NNC's workflows as functions the CLI, the API and the console share."""

from appliance.workflows.evaluate import EvaluateError, evaluate, forward
from appliance.workflows.train import RunResult, train

__all__ = ["EvaluateError", "RunResult", "evaluate", "forward", "train"]
