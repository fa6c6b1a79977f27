"""Providers that databazel's rules return, so that other rules can build on them."""

ModelInfo = provider(
    doc = "A trained model: what a `model` target built and what it was built from.",
    fields = {
        "model_file": "File: the model the training script wrote.",
        "hyperparams": "dict[str, str]: the hyperparameters the script received (as a JSON object in `--hyperparams`); empty when they came from `hyperparams_file`.",
        "hyperparams_file": "File: the JSON file of the hyperparameters the script received (written from `hyperparams`, or `hyperparams_file` itself).",
        "training_data": "depset[File]: the training data the script received through `--data`.",
        "label": "Label: the `model` target that built the model.",
        "checkpoints": "list[File]: with `epochs = N`, the N checkpoints, epoch 1 first (`model_file` is the last); empty for a model trained in one step.",
        "card": "File: the lineage card of `model_file` (JSON: its sha256, label, hyperparameters, training data, script, Python packages; see docs/models-as-dependencies.md).",
        "checkpoint_cards": "list[File]: the lineage card of each of `checkpoints`, epoch 1 first; empty for a model trained in one step.",
    },
)

MetricsInfo = provider(
    doc = "An evaluation: the metrics an `evaluate` target built for a model.",
    fields = {
        "metrics_file": "File: canonical JSON object mapping metric names to finite numbers (sorted keys).",
        "output_dir": "File (a directory): the `--output-dir` the evaluation script wrote into (its `metrics.json` included).",
        "model": "ModelInfo: the model that was evaluated.",
        "test_data": "depset[File]: the data the script received through `--data-path`.",
        "label": "Label: the `evaluate` target.",
        "card": "File: the lineage card of the evaluated model, with the metrics.",
        "epoch_evaluations": "dict[int, struct(metrics_file, output_dir, card)]: for a model trained in epochs, the evaluation of each evaluated epoch's checkpoint (the last one's is `metrics_file`); empty otherwise.",
        "early_stopping": "struct(rungs: list[int], bracket: int or None) for a trial of a search with `early_stopping`: the epochs of its bracket's rungs and its Hyperband bracket. Unset otherwise (read it with `getattr(info, \"early_stopping\", None)`).",
    },
)

SearchReportInfo = provider(
    doc = "The report of a `hyperparam_search`.",
    fields = {
        "json": "File: the report as JSON (`search`, `metric`, `mode`, `trials` best first, `best`).",
        "csv": "File: the leaderboard as CSV, best first.",
        "markdown": "File: the leaderboard as a Markdown table, best first (embedding the plots, if any).",
        "leaderboard": "File: the leaderboard as a text table (what `bazel run` on the report target prints).",
        "best_model": "File: a byte-identical copy of the best trial's model file.",
        "best_hyperparams": "File: the best trial's hyperparameters, a JSON object of strings.",
        "best_card": "File: the lineage card of `best_model` (the winning trial's card, with its metrics and the search).",
        "plots": "list[File]: the PNG plots (empty unless `plots = True`).",
        "html": "File: the interactive HTML report `<name>.html` (None unless `plots = True`).",
        "metric": "str: the metric trials are ranked by.",
        "mode": "str: `max` or `min`.",
        "trials": "list[MetricsInfo]: every trial of the search, in grid order.",
    },
)
