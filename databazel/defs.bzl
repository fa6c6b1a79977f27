"""Public API of databazel: machine-learning workflows as Bazel targets.

```starlark
load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model")
load("@databazel//databazel:defs.bzl", "metrics_test")  # quality gates
load("@databazel//databazel:defs.bzl", "loguniform", "randint", "uniform")  # random search
load("@databazel//databazel:defs.bzl", "hyperband", "successive_halving")  # early stopping
```
"""

load("//databazel/private:early_stopping.bzl", _hyperband = "hyperband", _successive_halving = "successive_halving")
load("//databazel/private:evaluate.bzl", _evaluate = "evaluate")
load("//databazel/private:gate.bzl", _metrics_test = "metrics_test")
load("//databazel/private:mlflow.bzl", _search_mlflow = "search_mlflow")
load("//databazel/private:model.bzl", _model = "model")
load("//databazel/private:providers.bzl", _MetricsInfo = "MetricsInfo", _ModelInfo = "ModelInfo", _SearchReportInfo = "SearchReportInfo")
load("//databazel/private:random.bzl", _loguniform = "loguniform", _randint = "randint", _uniform = "uniform")
load("//databazel/private:search.bzl", _hyperparam_search = "hyperparam_search", _search_best = "search_best", _search_report = "search_report")

model = _model
evaluate = _evaluate
hyperparam_search = _hyperparam_search
search_report = _search_report
search_best = _search_best
search_mlflow = _search_mlflow
metrics_test = _metrics_test

# Search-space entries of a random search (`hyperparam_search(strategy = "random", ...)`).
uniform = _uniform
loguniform = _loguniform
randint = _randint

# Early stopping (`hyperparam_search(early_stopping = ...)`).
successive_halving = _successive_halving
hyperband = _hyperband

ModelInfo = _ModelInfo
MetricsInfo = _MetricsInfo
SearchReportInfo = _SearchReportInfo
