"""Command-line templates (`args`, `train_args`, `eval_args`): checked when the BUILD file is loaded.

A template is a list of strings, each one argument of the script, with
placeholders the runner fills in (templates.py, the same grammar and parse
messages). Nothing here creates targets: `check_templates` returns what is
wrong, unit-tested with skylib's `unittest`; the rules and `hyperparam_search`
call `check_train_template` and `check_eval_template`, which fail with it.
"""

load(":grid.bzl", "is_identifier")

# The placeholders of each kind of script, in the order the docs list them.
TRAIN_PLACEHOLDERS = ["data", "model_output_path", "hyperparams", "epoch", "init_model_path"]
EVALUATE_PLACEHOLDERS = ["model_path", "data_path", "output_dir", "metrics_file"]
HYPERPARAM_PREFIX = "hp."

# Only a model trained in epochs has these.
_EPOCH_PLACEHOLDERS = ["epoch", "init_model_path"]

# A placeholder of the other kind of script, and the one meant.
_MEANT = {
    "evaluate": {"data": "data_path", "init_model_path": "model_path", "model_output_path": "model_path"},
    "train": {"data_path": "data", "model_path": "init_model_path", "output_dir": "model_output_path"},
}

def parse_template(template):
    """The placeholders of one template, or what is wrong with its braces.

    `{{` and `}}` are literal braces; `{NAME}` is a placeholder.

    Args:
      template: a string.

    Returns:
      struct(placeholders = list of names in order, error = None or a
      message fragment such as "has a `{` with no closing `}` (...)").
    """
    names = []
    i = 0
    for _ in range(len(template) + 1):
        opening = template.find("{", i)
        closing = template.find("}", i)
        if opening < 0 and closing < 0:
            break
        i = closing if opening < 0 or (closing >= 0 and closing < opening) else opening
        c = template[i]
        if template[i + 1:i + 2] == c:
            i += 2
        elif c == "}":
            return struct(placeholders = names, error = "has a `}` with no opening `{` (write `}}` for a literal `}`)")
        else:
            end = template.find("}", i + 1)
            inner = template.find("{", i + 1)
            if end < 0 or (inner >= 0 and inner < end):
                return struct(placeholders = names, error = "has a `{` with no closing `}` (write `{{` for a literal `{`)")
            names.append(template[i + 1:end])
            i = end + 1
    return struct(placeholders = names, error = None)

def _listed(names):
    return ", ".join(["`{" + n + "}`" for n in names])

def _placeholder_error(attr_name, entry, name, kind, hyperparam_names, epochs):
    """What is wrong with placeholder `name` of `entry`, or None."""
    known = TRAIN_PLACEHOLDERS if kind == "train" else EVALUATE_PLACEHOLDERS
    where = "`{}` entry {}".format(attr_name, json.encode(entry))
    if kind == "train" and name.startswith(HYPERPARAM_PREFIX) and is_identifier(name[len(HYPERPARAM_PREFIX):]):
        key = name[len(HYPERPARAM_PREFIX):]
        if hyperparam_names == None or key in hyperparam_names:
            return None
        if key == "epochs" and epochs:
            return "{} uses `{{{}}}`, but the number of epochs is not a hyperparameter the script gets: use `{{epoch}}`, the epoch an action trains".format(where, name)
        return "{} uses `{{{}}}`, but there is no hyperparameter `{}` (the hyperparameters are: {})".format(
            where,
            name,
            key,
            ", ".join(sorted(hyperparam_names)) or "none",
        )
    if name in known:
        if name in _EPOCH_PLACEHOLDERS and not epochs:
            return "{} uses `{{{}}}`, which only a model trained in epochs (`epochs = N`) has".format(where, name)
        return None
    hint = ""
    if name in _MEANT[kind]:
        hint = " (did you mean `{{{}}}`?)".format(_MEANT[kind][name])
    elif kind == "evaluate" and (name == "hyperparams" or name.startswith(HYPERPARAM_PREFIX)):
        hint = " (an evaluation script gets no hyperparameters)"
    return "{} has the unknown placeholder `{{{}}}`{}; {} placeholders are {} (write `{{{{` and `}}}}` for literal braces)".format(
        where,
        name,
        hint,
        "a training script's" if kind == "train" else "an evaluation script's",
        _listed(known + (["hp.NAME"] if kind == "train" else [])),
    )

def check_templates(attr_name, templates, kind, hyperparam_names = None, epochs = False):
    """What is wrong with a command-line template, if anything.

    Args:
      attr_name: the attribute holding it, for messages (`args`, `train_args`, `eval_args`).
      templates: the template, a list of strings.
      kind: `train` or `evaluate`.
      hyperparam_names: the names `{hp.NAME}` may use; None when they are only
        known when the action runs (a model's `hyperparams_file`).
      epochs: whether the model trains in epochs (training only).

    Returns:
      struct(error = None or the message, without the target; placeholders =
      dict of every placeholder name used).
    """
    used = {}
    if type(templates) != "list" or [t for t in templates if type(t) != "string"]:
        return struct(error = "`{}` must be a list of strings, got {}".format(attr_name, repr(templates)), placeholders = used)
    for entry in templates:
        if "\0" in entry:
            return struct(error = "`{}` entry {} contains a NUL byte, which no command-line argument can hold".format(attr_name, json.encode(entry)), placeholders = used)
        parsed = parse_template(entry)
        if parsed.error:
            return struct(error = "`{}` entry {} {}".format(attr_name, json.encode(entry), parsed.error), placeholders = used)
        for name in parsed.placeholders:
            error = _placeholder_error(attr_name, entry, name, kind, hyperparam_names, epochs)
            if error:
                return struct(error = error, placeholders = used)
            used[name] = True
    error = None
    if kind == "train" and "model_output_path" not in used:
        error = "`{}` has no `{{model_output_path}}`: only through it is the script told where to write the model (such as \"--output={{model_output_path}}\")".format(attr_name)
    elif kind == "train" and epochs and "epoch" not in used:
        error = "`{}` has no `{{epoch}}`, but the model trains in epochs, one action each: the script must be told which epoch it trains (such as \"--epoch={{epoch}}\")".format(attr_name)
    elif kind == "train" and epochs and "init_model_path" not in used:
        error = "`{}` has no `{{init_model_path}}`, but the model trains in epochs: from epoch 2 on the script must resume from the checkpoint of the epoch before (such as \"--resume-from\", \"{{init_model_path}}\", which epoch 1 leaves out)".format(attr_name)
    elif kind == "evaluate" and "metrics_file" not in used and "output_dir" not in used:
        error = "`{}` has neither `{{metrics_file}}` nor `{{output_dir}}`: only through one of them is the script told where to write its metrics (such as \"--output-file={{metrics_file}}\")".format(attr_name)
    return struct(error = error, placeholders = used)

def check_train_template(where, attr_name, template, hyperparam_names, epochs):
    """Fails naming `where` unless `template` (a non-empty `args`) is a valid training command line.

    Args:
      where: the target (or search) to name.
      attr_name: the attribute holding the template (`args`, `train_args`).
      template: the template; empty: the fixed command line, nothing to check.
      hyperparam_names: the names `{hp.NAME}` may use, or None when unknown until the action runs.
      epochs: whether the model trains in epochs.

    Returns:
      dict of the placeholder names the template uses.
    """
    if template == []:
        return {}
    checked = check_templates(attr_name, template, "train", hyperparam_names, epochs)
    if checked.error:
        fail("{}: {}".format(where, checked.error))
    return checked.placeholders

def check_eval_template(where, attr_name, template):
    """Fails naming `where` unless `template` (a non-empty `args`) is a valid evaluation command line.

    Args:
      where: the target (or search) to name.
      attr_name: the attribute holding the template (`args`, `eval_args`).
      template: the template; empty: the fixed command line, nothing to check.
    """
    if template == []:
        return
    checked = check_templates(attr_name, template, "evaluate")
    if checked.error:
        fail("{}: {}".format(where, checked.error))
