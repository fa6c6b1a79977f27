"""Public API of databazel: machine-learning workflows as Bazel targets.

```starlark
load("@databazel//databazel:defs.bzl", "evaluate", "hyperparam_search", "model")
```
"""

load("//databazel/private:evaluate.bzl", _evaluate = "evaluate")
load("//databazel/private:model.bzl", _model = "model")
load("//databazel/private:providers.bzl", _MetricsInfo = "MetricsInfo", _ModelInfo = "ModelInfo", _SearchReportInfo = "SearchReportInfo")
load("//databazel/private:search.bzl", _hyperparam_search = "hyperparam_search", _search_report = "search_report")

model = _model
evaluate = _evaluate
hyperparam_search = _hyperparam_search
search_report = _search_report

ModelInfo = _ModelInfo
MetricsInfo = _MetricsInfo
SearchReportInfo = _SearchReportInfo
